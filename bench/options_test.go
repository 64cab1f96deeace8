package bench

import (
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	good := Options{APIURLs: []string{"http://127.0.0.1:8080"}, Password: "p"}
	tests := []struct {
		name string
		edit func(*Options)
		want []string // substrings of the error; none: valid
	}{
		{"defaults are valid", func(*Options) {}, nil},
		{"several URLs and agents", func(o *Options) {
			o.APIURLs = []string{"http://a:1", "https://b:2/zstack"}
			o.AgentURLs = []string{"http://127.0.0.1:7070"}
			o.NodeURLs = []string{"http://a:1"}
		}, nil},
		{"no URL", func(o *Options) { o.APIURLs = nil }, []string{"--url: at least one API URL is required"}},
		{"URL without scheme", func(o *Options) { o.APIURLs = []string{"127.0.0.1:8080"} }, []string{`--url "127.0.0.1:8080": want http://host:port`}},
		{"URL with another scheme", func(o *Options) { o.APIURLs = []string{"ftp://h:1"} }, []string{`--url "ftp://h:1"`}},
		{"URL with a query", func(o *Options) { o.APIURLs = []string{"http://h:1/?a=b"} }, []string{"must not have a query"}},
		{"bad agent URL", func(o *Options) { o.AgentURLs = []string{"h:7070"} }, []string{`--agents "h:7070"`}},
		{"bad node URL", func(o *Options) { o.NodeURLs = []string{"::"} }, []string{`--nodes "::"`}},
		{"no password", func(o *Options) { o.Password = "" }, []string{"no password: set --password or MPLANE_BENCH_PASSWORD"}},
		{"negative vms", func(o *Options) { o.VMs = -1 }, []string{"--vms must be between 1 and 60000, got -1"}},
		{"too many vms", func(o *Options) { o.VMs = 100000 }, []string{"--vms must be between 1 and 60000"}},
		{"negative concurrency", func(o *Options) { o.Concurrency = -3 }, []string{"--concurrency must be between 1 and 4096, got -3"}},
		{"unknown op", func(o *Options) { o.Ops = []string{"create", "reboot"} }, []string{`--ops: unknown operation "reboot"`}},
		{"create not first", func(o *Options) { o.Ops = []string{"stop", "create"} }, []string{"--ops must start with create"}},
		{"op twice", func(o *Options) { o.Ops = []string{"create", "stop", "stop"} }, []string{"--ops: stop is listed twice"}},
		{"wait mode", func(o *Options) { o.Wait = "sleep" }, []string{`--wait must be webhook or poll, got "sleep"`}},
		{"profile seconds", func(o *Options) { o.ProfileSeconds = -1 }, []string{"--profile-seconds must be between 0 and 600"}},
		{"every problem at once", func(o *Options) { o.APIURLs, o.Password, o.VMs = []string{"x"}, "", -5 },
			[]string{"--url \"x\"", "no password", "--vms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.edit(&o)
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", o)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" http://a:1/, ,http://b:2 ,")
	if strings.Join(got, "|") != "http://a:1|http://b:2" {
		t.Errorf("SplitList = %q", got)
	}
	if SplitList("") != nil {
		t.Error("SplitList of an empty string is not empty")
	}
}
