package server

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processInfo is the answer of the admin command process (GET
// /admin/process): what this process costs, for benchmarks and operators.
type processInfo struct {
	PID int `json:"pid"`
	// CPUSeconds is user + system CPU time since the process started.
	CPUSeconds float64 `json:"cpuSeconds"`
	// RSSBytes is the resident set now; MaxRSSBytes the peak.
	RSSBytes    int64 `json:"rssBytes"`
	MaxRSSBytes int64 `json:"maxRssBytes"`
	Goroutines  int   `json:"goroutines"`
	HeapBytes   int64 `json:"heapBytes"`
	UptimeMs    int64 `json:"uptimeMs"`
}

var processStart = time.Now()

func readProcessInfo() processInfo {
	info := processInfo{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), UptimeMs: time.Since(processStart).Milliseconds()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		info.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
		info.MaxRSSBytes = int64(ru.Maxrss) * 1024 // kilobytes on Linux
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				info.RSSBytes = pages * int64(os.Getpagesize())
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	info.HeapBytes = int64(ms.HeapAlloc)
	return info
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
