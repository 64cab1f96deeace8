package storage

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// transfer is one image download into the store.
type transfer struct {
	url          *url.URL
	header       http.Header
	dst          string // absolute
	rel          string // as the command gave it
	expectedSize int64
	md5          string // lower-case hex, "" unchecked
	resourceUUID string
	processType  string
	// replace lets the new file replace an existing one (a stale cache
	// entry); otherwise an existing dst is an error.
	replace bool
}

// permanent marks a download failure a resume cannot fix (an HTTP error
// status, a write error, a size the server announces wrongly).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func checkURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("url is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bad url: %w", err)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return nil, fmt.Errorf("url %s: scheme %q is not supported: want http or https", u.Redacted(), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("url %s has no host", u.Redacted())
	}
	return u, nil
}

func checkMd5(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	s = strings.ToLower(s)
	if b, err := hex.DecodeString(s); err != nil || len(b) != md5.Size {
		return "", fmt.Errorf("md5sum %q: want 32 hexadecimal digits", s)
	}
	return s, nil
}

func (a *Agent) downloadImage(ctx context.Context, _ *agentserver.Request, cmd protocol.DownloadImageCmd) (protocol.ImageRsp, error) {
	u, err := checkURL(cmd.URL)
	if err != nil {
		return protocol.ImageRsp{}, err
	}
	sum, err := checkMd5(cmd.Md5Sum)
	if err != nil {
		return protocol.ImageRsp{}, err
	}
	if cmd.ExpectedSize < 0 {
		return protocol.ImageRsp{}, fmt.Errorf("expectedSize %d: must not be negative", cmd.ExpectedSize)
	}
	dst, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.ImageRsp{}, err
	}
	defer a.paths.lock(dst)()
	if _, err := os.Lstat(dst); err == nil {
		return protocol.ImageRsp{}, fmt.Errorf("%s already exists", cmd.InstallPath)
	}
	return a.transfer(ctx, transfer{
		url: u, dst: dst, rel: cmd.InstallPath,
		expectedSize: cmd.ExpectedSize, md5: sum,
		resourceUUID: cmd.ImageUUID, processType: protocol.ProcessDownloadImage,
	})
}

func (a *Agent) fetchImage(ctx context.Context, _ *agentserver.Request, cmd protocol.FetchImageCmd) (protocol.ImageRsp, error) {
	base, err := checkURL(cmd.BackupStorageURL)
	if err != nil {
		return protocol.ImageRsp{}, fmt.Errorf("backupStorageUrl: %w", err)
	}
	if err := checkRelative(cmd.BackupStoragePath); err != nil {
		return protocol.ImageRsp{}, fmt.Errorf("backupStoragePath: %w", err)
	}
	sum, err := checkMd5(cmd.Md5Sum)
	if err != nil {
		return protocol.ImageRsp{}, err
	}
	if cmd.ExpectedSize < 0 {
		return protocol.ImageRsp{}, fmt.Errorf("expectedSize %d: must not be negative", cmd.ExpectedSize)
	}
	dst, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.ImageRsp{}, err
	}
	defer a.paths.lock(dst)()
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && (cmd.ExpectedSize == 0 || fi.Size() == cmd.ExpectedSize) {
		info, err := a.inspectChain(dst, "", "cached image")
		if err != nil {
			return protocol.ImageRsp{}, err
		}
		return a.imageRsp(cmd.InstallPath, info, "", true), nil
	} else if err == nil && !fi.Mode().IsRegular() {
		return protocol.ImageRsp{}, fmt.Errorf("%s exists and is not a regular file", cmd.InstallPath)
	}
	elems := append([]string{strings.Trim(protocol.PathFiles, "/")}, strings.Split(path.Clean(cmd.BackupStoragePath), "/")...)
	u := base.JoinPath(elems...)
	var h http.Header
	if cmd.BackupStorageSecret != "" {
		h = http.Header{protocol.SecretHeader: {cmd.BackupStorageSecret}}
	}
	return a.transfer(ctx, transfer{
		url: u, header: h, dst: dst, rel: cmd.InstallPath,
		expectedSize: cmd.ExpectedSize, md5: sum,
		resourceUUID: cmd.ImageUUID, processType: protocol.ProcessFetchImage,
		replace: true,
	})
}

// checkRelative is resolve's check of a path's form, for a path on another
// agent.
func checkRelative(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is absolute", p)
	case path.Clean(p) == ".":
		return fmt.Errorf("path %q names no file", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("path %q has a \"..\" element", p)
		}
	}
	return nil
}

func (a *Agent) imageRsp(rel string, info fileInfo, sum string, cached bool) protocol.ImageRsp {
	return protocol.ImageRsp{
		StorageCapacity: a.capacityNow(),
		InstallPath:     path.Clean(rel),
		Format:          info.format,
		Size:            info.virtualSize,
		ActualSize:      info.actualSize,
		Md5Sum:          sum,
		Cached:          cached,
	}
}

// transfer downloads t into a temporary file next to t.dst, checks it
// (size, md5, a qcow2 image must have no backing file), and moves it into
// place. On any failure, the temporary file is removed: nothing is left at
// t.dst (or the old file, for a replaced cache entry).
func (a *Agent) transfer(ctx context.Context, t transfer) (protocol.ImageRsp, error) {
	prog := &progress{a: a, t: &t, last: -1}
	var (
		sum  string
		info fileInfo
	)
	err := a.produce(t.dst, t.replace, func(tmp string) error {
		f, err := a.openNew(tmp)
		if err != nil {
			return err
		}
		sum, err = a.receive(ctx, f, &t, prog)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		info, err = a.readHeader(tmp, "", "downloaded image")
		if err != nil {
			return err
		}
		if info.backingName != "" {
			return fmt.Errorf("the image is a qcow2 file with a backing file (%q): images must be standalone", info.backingName)
		}
		return nil
	})
	if err != nil {
		return protocol.ImageRsp{}, fmt.Errorf("download %s to %s: %w", t.url.Redacted(), t.rel, err)
	}
	prog.send(100)
	info.abs = t.dst
	if fi, err := os.Stat(t.dst); err == nil {
		info.actualSize = allocated(fi)
	}
	return a.imageRsp(t.rel, info, sum, false), nil
}

// receive writes t's bytes into f (sparse) and returns their MD5. An
// interrupted transfer is resumed from the bytes written, up to
// Options.DownloadRetries times.
func (a *Agent) receive(ctx context.Context, f outFile, t *transfer, prog *progress) (string, error) {
	r := &receiver{f: f, w: &sparseWriter{f: f}, h: md5.New(), total: -1}
	for attempt := 0; ; attempt++ {
		err := a.receiveOnce(ctx, t, r, prog)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w (after %d bytes)", ctx.Err(), r.written)
		}
		var p permanent
		if errors.As(err, &p) || attempt >= a.opts.DownloadRetries {
			return "", err
		}
		a.log.Info("download interrupted, resuming", "url", t.url.Redacted(), "written", r.written, "attempt", attempt+1, "err", err)
		timer := time.NewTimer(a.opts.DownloadRetryInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return "", fmt.Errorf("%w (after %d bytes; resuming after: %v)", ctx.Err(), r.written, err)
		case <-timer.C:
		}
	}
	if t.expectedSize > 0 && r.written != t.expectedSize {
		return "", fmt.Errorf("got %d bytes, expected %d", r.written, t.expectedSize)
	}
	sum := hex.EncodeToString(r.h.Sum(nil))
	if t.md5 != "" && sum != t.md5 {
		return "", fmt.Errorf("md5 mismatch: got %s, expected %s", sum, t.md5)
	}
	if err := r.w.finish(); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	return sum, nil
}

// receiver is the state of a download across resumes.
type receiver struct {
	f       outFile
	w       *sparseWriter
	h       hash.Hash
	written int64
	total   int64 // -1: unknown
}

// restart forgets what was written (the server ignored a range request).
func (r *receiver) restart() error {
	if err := r.f.Truncate(0); err != nil {
		return permanent{fmt.Errorf("write: %w", err)}
	}
	r.w.off, r.written = 0, 0
	r.h.Reset()
	return nil
}

func (a *Agent) receiveOnce(ctx context.Context, t *transfer, r *receiver, prog *progress) error {
	// The attempt ends when nothing arrives for StallTimeout: a server
	// that stops sending without closing is an interruption too.
	stalled := fmt.Errorf("nothing received for %v", a.opts.StallTimeout)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(a.opts.StallTimeout, func() { cancel(stalled) })
	defer watchdog.Stop()
	err := a.receiveStream(ctx, t, r, prog, func() { watchdog.Reset(a.opts.StallTimeout) })
	if err != nil && errors.Is(context.Cause(ctx), stalled) {
		return fmt.Errorf("interrupted after %d of %s bytes: %w", r.written, sizeText(r.total), stalled)
	}
	return err
}

// receiveStream is one attempt: a GET (a range request when resuming)
// whose body is appended to r; alive is called whenever bytes come.
func (a *Agent) receiveStream(ctx context.Context, t *transfer, r *receiver, prog *progress, alive func()) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url.String(), nil)
	if err != nil {
		return permanent{err}
	}
	for k, vs := range t.header {
		req.Header[k] = vs
	}
	if r.written > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.written, 10)+"-")
	}
	rsp, err := a.dl.Do(req)
	if err != nil {
		return fmt.Errorf("GET: %w", err)
	}
	defer rsp.Body.Close()
	switch {
	case rsp.StatusCode == http.StatusOK:
		if r.written > 0 {
			if err := r.restart(); err != nil {
				return err
			}
		}
		r.total = rsp.ContentLength
	case rsp.StatusCode == http.StatusPartialContent && r.written > 0:
		start, total, ok := contentRange(rsp.Header.Get("Content-Range"))
		if !ok || start != r.written {
			return permanent{fmt.Errorf("resume at byte %d: the server answered the range %q", r.written, rsp.Header.Get("Content-Range"))}
		}
		r.total = total
	default:
		snippet, _ := io.ReadAll(io.LimitReader(rsp.Body, 256))
		msg := strings.TrimSpace(string(snippet))
		if msg != "" {
			msg = ": " + msg
		}
		return permanent{fmt.Errorf("HTTP %s%s", rsp.Status, msg)}
	}
	if r.total >= 0 {
		if t.expectedSize > 0 && r.total != t.expectedSize {
			return permanent{fmt.Errorf("the server announces %d bytes, expected %d", r.total, t.expectedSize)}
		}
		if err := a.ensureSpace(r.total-r.written, "the image"); err != nil {
			return permanent{err}
		}
	}
	prog.total = r.total
	buf := make([]byte, 256<<10)
	for {
		n, rerr := rsp.Body.Read(buf)
		if n > 0 {
			alive()
			if r.total >= 0 && r.written+int64(n) > r.total {
				return permanent{fmt.Errorf("the server sent more than the %d bytes it announced", r.total)}
			}
			if _, err := r.w.Write(buf[:n]); err != nil {
				return permanent{fmt.Errorf("write: %w", err)}
			}
			r.h.Write(buf[:n])
			r.written += int64(n)
			prog.update(r.written)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("interrupted after %d of %s bytes: %w", r.written, sizeText(r.total), rerr)
		}
	}
	if r.total >= 0 && r.written < r.total {
		return fmt.Errorf("interrupted after %d of %d bytes: connection closed", r.written, r.total)
	}
	return nil
}

func sizeText(n int64) string {
	if n < 0 {
		return "an unknown number of"
	}
	return strconv.FormatInt(n, 10)
}

// contentRange parses "bytes start-end/total" (total may be "*": -1).
func contentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	s, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return start, total, true
}

// progress posts a download's EventProgressReport events: on each new
// percent, at most one per Options.ProgressInterval, the first at once;
// 100 only once the image is in place.
type progress struct {
	a      *Agent
	t      *transfer
	total  int64
	last   int
	lastAt time.Time
}

func (p *progress) update(written int64) {
	if p.total <= 0 {
		return
	}
	pct := int(min(written*100/p.total, 99))
	if pct <= p.last || (p.last >= 0 && time.Since(p.lastAt) < p.a.opts.ProgressInterval) {
		return
	}
	p.send(pct)
}

func (p *progress) send(pct int) {
	p.last, p.lastAt = pct, time.Now()
	p.a.mu.Lock()
	server := p.a.uuid
	p.a.mu.Unlock()
	p.a.events.emit(protocol.EventProgressReport, protocol.ProgressEvent{
		Progress:     strconv.Itoa(pct),
		ProcessType:  p.t.processType,
		ResourceUUID: p.t.resourceUUID,
		ServerUUID:   server,
	})
}
