package kvm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mplane/agents/protocol"
	"os"
	"path/filepath"
	"sort"
)

// stateFile is the on-disk form of what survives a restart.
type stateFile struct {
	FormatVersion int           `json:"formatVersion"`
	Secret        string        `json:"secret,omitempty"`
	VMs           []protocol.VM `json:"vms"`
}

const stateFormatVersion = 1

// load reads the state file, if any. A missing file is an empty host; an
// unreadable one is an error (starting empty would forget running VMs).
func (a *Agent) load() error {
	if a.opts.StateFile == "" {
		return nil
	}
	data, err := os.ReadFile(a.opts.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read kvm agent state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("parse kvm agent state %s: %w", a.opts.StateFile, err)
	}
	if st.FormatVersion != stateFormatVersion {
		return fmt.Errorf("kvm agent state %s: format version %d, want %d", a.opts.StateFile, st.FormatVersion, stateFormatVersion)
	}
	a.secret = st.Secret
	for _, vm := range st.VMs {
		vm := vm
		a.vms[vm.UUID] = &vm
	}
	a.log.Info("state loaded", "file", a.opts.StateFile, "vms", len(st.VMs), "secret", st.Secret != "")
	return nil
}

// persist writes the current state if it changed since the last write.
// Writes are serialized and never go backwards: a writer that finds a newer
// version already written does nothing.
func (a *Agent) persist() error {
	if a.opts.StateFile == "" {
		return nil
	}
	a.persistMu.Lock()
	defer a.persistMu.Unlock()
	a.mu.Lock()
	ver := a.version
	st := stateFile{FormatVersion: stateFormatVersion, Secret: a.secret, VMs: make([]protocol.VM, 0, len(a.vms))}
	for _, vm := range a.vms {
		st.VMs = append(st.VMs, cloneVM(vm))
	}
	a.mu.Unlock()
	if ver <= a.persisted {
		return nil
	}
	sort.Slice(st.VMs, func(i, j int) bool { return st.VMs[i].UUID < st.VMs[j].UUID })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode kvm agent state: %w", err)
	}
	if err := writeFileAtomic(a.opts.StateFile, data); err != nil {
		return fmt.Errorf("write kvm agent state: %w", err)
	}
	a.persisted = ver
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so that a crash leaves the old or the new content,
// never a mix. The file is 0600: it holds the host secret.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable; not every platform can sync a dir.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
