package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// qemuImg runs the qemu-img binary (Options.QemuImg).
type qemuImg struct {
	bin     string // "" when the agent has none
	version string
}

// QemuImgNone as Options.QemuImg makes the agent work without qemu-img
// even where it is installed: raw files only.
const QemuImgNone = "none"

func findQemuImg(opt string) (qemuImg, error) {
	switch opt {
	case QemuImgNone:
		return qemuImg{}, nil
	case "":
		bin, err := exec.LookPath("qemu-img")
		if err != nil {
			return qemuImg{}, nil // not installed: raw files
		}
		opt = bin
	}
	bin, err := exec.LookPath(opt)
	if err != nil {
		return qemuImg{}, fmt.Errorf("qemu-img %q: %w", opt, err)
	}
	q := qemuImg{bin: bin}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := q.run(ctx, "--version")
	if err != nil {
		return qemuImg{}, fmt.Errorf("qemu-img %q does not run: %w", bin, err)
	}
	// "qemu-img version 7.2.22 (Debian ...)"
	first, _, _ := strings.Cut(out, "\n")
	q.version = strings.TrimSpace(strings.TrimPrefix(first, "qemu-img version"))
	return q, nil
}

func (q qemuImg) ok() bool { return q.bin != "" }

// run runs qemu-img with args and returns its standard output; a failure
// carries its standard error. ctx ends it (the command's deadline).
func (q qemuImg) run(ctx context.Context, args ...string) (string, error) {
	if q.bin == "" {
		return "", errors.New("this agent has no qemu-img")
	}
	cmd := exec.CommandContext(ctx, q.bin, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("qemu-img %s: %s", args[0], msg)
	}
	return stdout.String(), nil
}

func (q qemuImg) createQcow2(ctx context.Context, path string, size int64) error {
	_, err := q.run(ctx, "create", "-q", "-f", "qcow2", path, strconv.FormatInt(size, 10))
	return err
}

// createOverlay creates a qcow2 at path backed by backingName (written as
// is into the header) of format backingFmt; size 0 takes the backing
// file's.
func (q qemuImg) createOverlay(ctx context.Context, path, backingName, backingFmt string, size int64) error {
	args := []string{"create", "-q", "-f", "qcow2", "-b", backingName, "-F", backingFmt, path}
	if size > 0 {
		args = append(args, strconv.FormatInt(size, 10))
	}
	_, err := q.run(ctx, args...)
	return err
}

// convert writes src (of format srcFmt, with its backing chain) as a
// standalone qcow2 at dst. Zeros are not written: the result is sparse.
func (q qemuImg) convert(ctx context.Context, src, srcFmt, dst string) error {
	_, err := q.run(ctx, "convert", "-q", "-f", srcFmt, "-O", "qcow2", src, dst)
	return err
}

// convertSnapshot writes the content of the qcow2 file src as of its
// internal snapshot name (with its backing chain) as a standalone qcow2 at
// dst, sparse as convert's; src is only read. name is matched by name,
// never by ID, and must be a snapshotName (no ',' for the option parser).
// The result has src's current virtual size: qemu-img does not give it
// the snapshot's.
func (q qemuImg) convertSnapshot(ctx context.Context, src, name, dst string) error {
	_, err := q.run(ctx, "convert", "-q", "-f", "qcow2", "-l", "snapshot.name="+name, "-O", "qcow2", src, dst)
	return err
}

func (q qemuImg) resize(ctx context.Context, path, format string, size int64) error {
	_, err := q.run(ctx, "resize", "-q", "-f", format, path, strconv.FormatInt(size, 10))
	return err
}

// setSize makes the virtual size of the file at path size, shrinking it if
// need be (what is past size is dropped): for files the agent is writing,
// never for a volume.
func (q qemuImg) setSize(ctx context.Context, path, format string, size int64) error {
	_, err := q.run(ctx, "resize", "-q", "--shrink", "-f", format, path, strconv.FormatInt(size, 10))
	return err
}

// snapshot runs "qemu-img snapshot -<op> name path": op c (create), a
// (apply), d (delete).
func (q qemuImg) snapshot(ctx context.Context, op, name, path string) error {
	// qemu-img snapshot has no -f: --image-opts names the driver, so
	// that nothing is probed.
	_, err := q.run(ctx, "snapshot", "-q", "--image-opts", "-"+op, name, qcow2Opts(path))
	return err
}

// qcow2Opts is path as --image-opts for the qcow2 driver (a comma in an
// option value is doubled).
func qcow2Opts(path string) string {
	return "driver=qcow2,file.driver=file,file.filename=" + strings.ReplaceAll(path, ",", ",,")
}

// snapshotNames lists the internal snapshots of a qcow2 file.
func (q qemuImg) snapshotNames(ctx context.Context, path string) ([]string, error) {
	out, err := q.run(ctx, "info", "--output=json", "-U", "-f", "qcow2", path)
	if err != nil {
		return nil, err
	}
	var info struct {
		Snapshots []struct {
			Name string `json:"name"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("qemu-img info: %w", err)
	}
	names := make([]string, 0, len(info.Snapshots))
	for _, s := range info.Snapshots {
		names = append(names, s.Name)
	}
	return names, nil
}
