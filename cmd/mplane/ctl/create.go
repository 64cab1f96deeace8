package ctl

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"mplane/errcode"
)

// paramKind is how a create flag's value is sent.
type paramKind int

const (
	paramString paramKind = iota
	paramInt
	paramSize // a string flag with a size ("1G"), sent as bytes
	paramList // a comma list flag, sent as a JSON list
	paramPath // a string flag that fills the resource path, not a param
)

// pathChoice is one value a paramPath flag with choices takes, and the
// path segment it puts in the path.
type pathChoice struct{ value, segment string }

// paramFlag maps one flag of a create command to one API param.
type paramFlag struct {
	flag     string
	param    string
	kind     paramKind
	required bool
	def      string // default, sent when the flag is not given
	usage    string
	// choices, for a paramPath flag, are the values it takes (any case)
	// and the segment each puts in the path; nil takes any UUID.
	choices []pathChoice
	// altPath, for an optional paramPath flag, is the create path when it
	// is given, instead of the spec's: "{flag}" is replaced by its value.
	altPath string
}

// createSpec is one "ctl create <noun>" command.
type createSpec struct {
	noun    *noun
	short   string
	example string
	// path is the create path; for paramPath flags, "{flag}" is replaced by
	// the flag's value (for one with choices, the value's segment).
	path  string
	flags []paramFlag
	// check, if set, returns the problems of flags given (or not given)
	// together, beyond each flag's own; given reports whether a flag was,
	// value is a string flag's value.
	check func(given func(flag string) bool, value func(flag string) string) []string
}

var createSpecs = []createSpec{
	{noun: zoneNoun, short: "Create a zone", path: "zones",
		example: "  mplane ctl create zone --name zone1",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "zone name"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: clusterNoun, short: "Create a cluster in a zone", path: "clusters",
		example: "  mplane ctl create cluster --name cluster1 --zone <zone-uuid>",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "cluster name"},
			{flag: "zone", param: "zoneUuid", required: true, usage: "UUID of the zone"},
			{flag: "hypervisor", param: "hypervisorType", def: "KVM", usage: "hypervisor type"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: hostNoun, short: "Add a KVM host to a cluster (same as `ctl add host`)", path: "hosts/kvm",
		example: "  mplane ctl add host --ip 10.0.0.5 --cluster <cluster-uuid>\n" +
			"  mplane ctl add host --ip 127.0.0.1 --port 7071 --cluster <cluster-uuid> --name sim1",
		flags: []paramFlag{
			{flag: "ip", param: "managementIp", required: true, usage: "management IP of the host (where its agent listens)"},
			{flag: "port", param: "agentPort", kind: paramInt, usage: "port of the host's agent (server default 7070)"},
			{flag: "cluster", param: "clusterUuid", required: true, usage: "UUID of the cluster"},
			{flag: "name", param: "name", usage: "host name (server default: the IP)"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: offeringNoun, short: "Create an instance offering (CPU and memory of a VM)", path: "instance-offerings",
		example: "  mplane ctl create offering --name small --cpu 1 --memory 1G",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "offering name"},
			{flag: "cpu", param: "cpuNum", kind: paramInt, required: true, usage: "number of vCPUs"},
			{flag: "memory", param: "memorySize", kind: paramSize, required: true, usage: "memory: bytes or 512M, 1G, 1.5G (1024-based)"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: diskOfferingNoun, short: "Create a disk offering (the size of data volumes)", path: "disk-offerings",
		example: "  mplane ctl create disk-offering --name disk-10g --size 10G",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "disk offering name"},
			{flag: "size", param: "diskSize", kind: paramSize, required: true, usage: "size: bytes or 512M, 10G (1024-based)"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: imageNoun, short: "Add an image: downloaded into backup storage (the job ends when the download does)", path: "images",
		example: "  mplane ctl create image --name cirros --image-url http://images.example/cirros.qcow2 --backup-storage <bs-uuid>",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "image name"},
			// Not --url: that is the API's URL, a flag of every command.
			{flag: "image-url", param: "url", required: true, usage: "where the image is downloaded from (an http or https URL)"},
			{flag: "format", param: "format", def: "qcow2", usage: "qcow2, raw or iso"},
			{flag: "media-type", param: "mediaType", usage: "RootVolumeTemplate, DataVolumeTemplate or ISO"},
			{flag: "platform", param: "platform", usage: "Linux, Windows, Other, ..."},
			{flag: "backup-storage", param: "backupStorageUuids", kind: paramList, required: true,
				usage: "UUIDs of the backup storage to download it into, comma separated"},
			{flag: "md5sum", param: "md5sum", usage: "the file's MD5 (hex), checked after the download"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: primaryStorageNoun, short: "Add primary storage to a zone (attach it to clusters with `ctl attach primary-storage`)",
		path: "primary-storage/{type}",
		example: "  mplane ctl create primary-storage --name local1 --dir /var/lib/mplane/local --zone <zone-uuid>\n" +
			"  mplane ctl create primary-storage --name shared1 --type smp --dir /mnt/shared --zone <zone-uuid>",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "primary storage name"},
			{flag: "type", kind: paramPath, def: "local", choices: []pathChoice{{"local", "local-storage"}, {"smp", "smp"}},
				usage: "local (LocalStorage: a directory of each host's own) or smp (SharedMountPoint: a directory every host mounts)"},
			// Not --url: that is the API's URL, a flag of every command.
			{flag: "dir", param: "url", required: true, usage: "the directory on the hosts (an absolute path; the simulated hosts serve /mplane/local)"},
			{flag: "zone", param: "zoneUuid", required: true, usage: "UUID of the zone"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: backupStorageNoun, short: "Add a storage agent (mplane agent storage) as image store backup storage", path: "backup-storage/image-store",
		example: "  mplane ctl create backup-storage --name bs1 --hostname 127.0.0.1 --port 7080 --dir /var/lib/mplane/images",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "backup storage name"},
			{flag: "hostname", param: "hostname", required: true, usage: "address of the storage agent"},
			{flag: "port", param: "agentPort", kind: paramInt, usage: "port of the storage agent (server default 7080)"},
			{flag: "dir", param: "url", required: true, usage: "the directory the agent serves (its --root, an absolute path)"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: volumeNoun, short: "Create a data volume: blank, or a copy of a snapshot or of a volume", path: "volumes/data",
		example: "  mplane ctl create volume --name data1 --size 10G\n" +
			"  mplane ctl create volume --name data2 --disk-offering <disk-offering-uuid> --primary-storage <ps-uuid> --host <host-uuid>\n" +
			"  mplane ctl create volume --name restored --from-snapshot <snapshot-uuid>\n" +
			"  mplane ctl create volume --name clone1 --from-volume <volume-uuid>",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "volume name"},
			{flag: "size", param: "diskSize", kind: paramSize, usage: "size: bytes or 512M, 10G (1024-based)"},
			{flag: "disk-offering", param: "diskOfferingUuid", usage: "UUID of a disk offering (instead of --size)"},
			{flag: "from-snapshot", kind: paramPath, altPath: "volumes/data/from/volume-snapshots/{from-snapshot}",
				usage: "UUID of a volume snapshot: the volume is a copy of it, as large, on its primary storage (and host)"},
			{flag: "from-volume", kind: paramPath, altPath: "volumes/data/from/volumes/{from-volume}",
				usage: "UUID of a volume: the volume is a copy (a clone) of it, as large, on its primary storage (and host)"},
			{flag: "primary-storage", param: "primaryStorageUuid", usage: "UUID of the primary storage (default: chosen by the allocator)"},
			{flag: "host", param: "hostUuid", usage: "UUID of the host, for local storage"},
			{flag: "description", param: "description", usage: "description"},
		},
		check: checkVolumeSource},
	{noun: snapshotNoun, short: "Take a snapshot of a volume (revert to it with `ctl snapshot revert`)",
		path:    "volumes/{volume}/volume-snapshots",
		example: "  mplane ctl create snapshot --volume <volume-uuid> --name before-upgrade",
		flags: []paramFlag{
			{flag: "volume", kind: paramPath, required: true, usage: "UUID of the volume"},
			{flag: "name", param: "name", required: true, usage: "snapshot name"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: l2Noun, short: "Create an L2 network: no VLAN, a VLAN, a VXLAN pool or a VXLAN network of a pool",
		path: "l2-networks/{type}",
		example: "  mplane ctl create l2 --name flat --zone <zone-uuid> --interface eth0\n" +
			"  mplane ctl create l2 --type vlan --vlan 100 --name v100 --zone <zone-uuid> --interface eth1\n" +
			"  mplane ctl create l2 --type vxlan-pool --name pool1 --zone <zone-uuid> --interface eth2\n" +
			"  mplane ctl create l2 --type vxlan --name vx1 --pool <pool-uuid> [--vni 5000]",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "network name"},
			{flag: "type", kind: paramPath, def: "novlan", choices: []pathChoice{{"novlan", "no-vlan"}, {"vlan", "vlan"},
				{"vxlan-pool", "vxlan-pool"}, {"vxlan", "vxlan"}},
				usage: "novlan (L2NoVlanNetwork), vlan (L2VlanNetwork), vxlan-pool (VxlanNetworkPool) or vxlan (VxlanNetwork, in a pool)"},
			{flag: "zone", param: "zoneUuid", usage: "UUID of the zone (required but for --type vxlan: the pool's)"},
			{flag: "interface", param: "physicalInterface", usage: "the hosts' physical interface, e.g. eth0 (required but for --type vxlan: the pool's)"},
			{flag: "vlan", param: "vlan", kind: paramInt, usage: "VLAN ID, 1 to 4094, for --type vlan (unique per zone and interface)"},
			{flag: "pool", param: "poolUuid", usage: "UUID of the VXLAN pool, for --type vxlan"},
			{flag: "vni", param: "vni", kind: paramInt, usage: "VNI of a --type vxlan network, in one of the pool's ranges (default: the lowest free)"},
			{flag: "description", param: "description", usage: "description"},
		},
		check: checkL2Type},
	{noun: vniRangeNoun, short: "Add a range of VNIs to a VXLAN pool (its VXLAN networks take theirs from its ranges)",
		path:    "l2-networks/vxlan-pool/{pool}/vni-range",
		example: "  mplane ctl create vni-range --pool <pool-uuid> --name r1 --start 5000 --end 5999",
		flags: []paramFlag{
			{flag: "pool", kind: paramPath, required: true, usage: "UUID of the VXLAN pool"},
			{flag: "name", param: "name", required: true, usage: "range name"},
			{flag: "start", param: "startVni", kind: paramInt, required: true, usage: "first VNI (1 to 16777214)"},
			{flag: "end", param: "endVni", kind: paramInt, required: true, usage: "last VNI"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: l3Noun, short: "Create an L3 network on an L2 network (in its zone)", path: "l3-networks",
		example: "  mplane ctl create l3 --name public --l2 <l2-uuid>\n" +
			"  mplane ctl create l3 --name mgmt --l2 <l2-uuid> --category Public --dns-domain corp.example.org",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "network name"},
			{flag: "l2", param: "l2NetworkUuid", required: true, usage: "UUID of the L2 network it is on (its zone is the L3 network's; not a VXLAN pool)"},
			{flag: "zone", param: "zoneUuid", usage: "UUID of the zone, a check only: it must be the L2 network's"},
			{flag: "category", param: "category", usage: "Private (the default) or Public"},
			{flag: "dns-domain", param: "dnsDomain", usage: "the network's DNS domain"},
			{flag: "description", param: "description", usage: "description"},
		}},
	{noun: ipRangeNoun, short: "Add an IP range to an L3 network", path: "l3-networks/{l3}/ip-ranges",
		example: "  mplane ctl create ip-range --l3 <l3-uuid> --start 10.0.0.10 --end 10.0.0.200 \\\n" +
			"      --netmask 255.255.255.0 --gateway 10.0.0.1",
		flags: []paramFlag{
			{flag: "l3", kind: paramPath, required: true, usage: "UUID of the L3 network"},
			{flag: "start", param: "startIp", required: true, usage: "first IP of the range"},
			{flag: "end", param: "endIp", required: true, usage: "last IP of the range"},
			{flag: "netmask", param: "netmask", required: true, usage: "netmask, e.g. 255.255.255.0"},
			{flag: "gateway", param: "gateway", required: true, usage: "gateway IP"},
			{flag: "name", param: "name", usage: "range name (default: <start>-<end>)"},
		}},
	{noun: vmNoun, short: "Create and start a VM", path: "vm-instances",
		example: "  mplane ctl create vm --name web1 --offering <offering-uuid> --image <image-uuid> --l3 <l3-uuid>\n" +
			"  mplane ctl create vm --name db1 --offering <uuid> --image <uuid> --l3 <uuid>,<uuid> --host <host-uuid>\n" +
			"  mplane ctl create vm --name db2 --offering <uuid> --image <uuid> --l3 <uuid> --data-disk-offering <disk-offering-uuid>",
		flags: []paramFlag{
			{flag: "name", param: "name", required: true, usage: "VM name"},
			{flag: "offering", param: "instanceOfferingUuid", required: true, usage: "UUID of the instance offering"},
			{flag: "image", param: "imageUuid", required: true, usage: "UUID of the image"},
			{flag: "l3", param: "l3NetworkUuids", kind: paramList, required: true, usage: "UUIDs of the L3 networks, comma separated (one NIC each)"},
			{flag: "default-l3", param: "defaultL3NetworkUuid", usage: "UUID of the default L3 network (default: the first --l3)"},
			{flag: "host", param: "hostUuid", usage: "UUID of the host to start on (default: chosen by the server)"},
			{flag: "cluster", param: "clusterUuid", usage: "UUID of the cluster to place the VM in"},
			{flag: "zone", param: "zoneUuid", usage: "UUID of the zone to place the VM in"},
			{flag: "data-disk-offering", param: "dataDiskOfferingUuids", kind: paramList,
				usage: "UUID of a disk offering: a blank data volume of its size, made and attached with the VM; repeat (or comma separate) for more"},
			{flag: "description", param: "description", usage: "description"},
		}},
}

// checkL2Type: the flags each type of L2 network takes.
func checkL2Type(given func(string) bool, value func(string) string) []string {
	typ := strings.ToLower(strings.TrimSpace(value("type")))
	own := map[string][]string{"novlan": {"zone", "interface"}, "vlan": {"zone", "interface", "vlan"},
		"vxlan-pool": {"zone", "interface"}, "vxlan": {"pool"}}
	needs, ok := own[typ]
	if !ok {
		return nil // the --type choice's own error
	}
	var missing, problems []string
	for _, f := range needs {
		if !given(f) {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		problems = append(problems, "--type "+typ+" needs "+strings.Join(missing, ", "))
	}
	only := map[string]string{"vlan": "vlan", "pool": "vxlan", "vni": "vxlan"}
	for _, f := range []string{"vlan", "pool", "vni"} {
		if given(f) && only[f] != typ {
			problems = append(problems, fmt.Sprintf("--%s is only for --type %s", f, only[f]))
		}
	}
	return problems
}

// checkVolumeSource: a volume's size comes from one place, --size or
// --disk-offering, unless it is a copy, which has its source's size,
// primary storage and host.
func checkVolumeSource(given func(string) bool, _ func(string) string) []string {
	var from string
	switch {
	case given("from-snapshot") && given("from-volume"):
		return []string{"give --from-snapshot or --from-volume, not both"}
	case given("from-snapshot"):
		from = "--from-snapshot"
	case given("from-volume"):
		from = "--from-volume"
	case given("size") && given("disk-offering"):
		return []string{"give --size or --disk-offering, not both"}
	case !given("size") && !given("disk-offering"):
		return []string{"missing the size: give --size or --disk-offering (or --from-snapshot or --from-volume for a copy)"}
	default:
		return nil
	}
	var problems []string
	for _, f := range []string{"size", "disk-offering"} {
		if given(f) {
			problems = append(problems, fmt.Sprintf("--%s cannot be given with %s: a copy is as large as its source", f, from))
		}
	}
	for _, f := range []string{"primary-storage", "host"} {
		if given(f) {
			problems = append(problems, fmt.Sprintf("--%s cannot be given with %s: a copy is made where its source is", f, from))
		}
	}
	return problems
}

// flagValues holds the parsed values of a createSpec's flags.
type flagValues struct {
	spec   createSpec
	str    map[string]*string
	num    map[string]*int
	list   map[string]*[]string
	noWait bool
}

func bindCreateFlags(fs *pflag.FlagSet, spec createSpec) *flagValues {
	v := &flagValues{spec: spec, str: map[string]*string{}, num: map[string]*int{}, list: map[string]*[]string{}}
	for _, p := range spec.flags {
		usage := p.usage
		if p.required {
			usage += " (required)"
		}
		switch p.kind {
		case paramInt:
			v.num[p.flag] = fs.Int(p.flag, 0, usage)
		case paramList:
			v.list[p.flag] = fs.StringSlice(p.flag, nil, usage)
		default:
			v.str[p.flag] = fs.String(p.flag, p.def, usage)
		}
	}
	fs.BoolVar(&v.noWait, "no-wait", false, "do not wait for the job: print its location and return")
	return v
}

// params builds the create path and the params from the flags: required
// flags must be given, optional ones are sent only when given (or when
// they have a default), so the server's strict decoding sees only fields
// the user meant.
func (v *flagValues) params(fs *pflag.FlagSet) (string, map[string]any, error) {
	path := v.spec.path
	params := map[string]any{}
	var missing, problems []string
	for _, p := range v.spec.flags {
		changed := fs.Changed(p.flag)
		if !changed && p.def == "" {
			if p.required {
				missing = append(missing, "--"+p.flag)
			}
			continue
		}
		switch p.kind {
		case paramInt:
			params[p.param] = *v.num[p.flag]
		case paramList:
			var items []string
			for _, s := range *v.list[p.flag] {
				if s = strings.TrimSpace(s); s != "" {
					items = append(items, s)
				}
			}
			if len(items) == 0 {
				problems = append(problems, "--"+p.flag+" is empty")
				continue
			}
			params[p.param] = items
		case paramSize:
			n, err := parseSize(*v.str[p.flag])
			if err != nil {
				problems = append(problems, "--"+p.flag+": "+err.Error())
				continue
			}
			params[p.param] = n
		case paramPath:
			val := strings.TrimSpace(*v.str[p.flag])
			if p.choices != nil {
				seg, err := p.choose(val)
				if err != nil {
					problems = append(problems, err.Error())
					continue
				}
				path = strings.ReplaceAll(path, "{"+p.flag+"}", seg)
				continue
			}
			if val == "" || strings.Contains(val, "/") {
				problems = append(problems, fmt.Sprintf("--%s must be a UUID, got %q", p.flag, val))
				continue
			}
			if p.altPath != "" {
				path = p.altPath
			}
			path = strings.ReplaceAll(path, "{"+p.flag+"}", val)
		default:
			val := *v.str[p.flag]
			if p.required && strings.TrimSpace(val) == "" {
				problems = append(problems, "--"+p.flag+" is empty")
				continue
			}
			params[p.param] = val
		}
	}
	if len(missing) > 0 {
		problems = append([]string{"missing required flags: " + strings.Join(missing, ", ")}, problems...)
	}
	if v.spec.check != nil {
		value := func(flag string) string {
			if p, ok := v.str[flag]; ok {
				return *p
			}
			return ""
		}
		problems = append(problems, v.spec.check(fs.Changed, value)...)
	}
	if len(problems) > 0 {
		return "", nil, errcode.New(errcode.InvalidArgument, "%s", strings.Join(problems, "; "))
	}
	return path, params, nil
}

// choose is the path segment of a paramPath flag's value among its
// choices.
func (p paramFlag) choose(val string) (string, error) {
	values := make([]string, len(p.choices))
	for i, c := range p.choices {
		if strings.EqualFold(val, c.value) {
			return c.segment, nil
		}
		values[i] = c.value
	}
	return "", fmt.Errorf("--%s must be %s or %s, got %q", p.flag, strings.Join(values[:len(values)-1], ", "), values[len(values)-1], val)
}

func newCreateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create <noun> [flags]",
		Short: "Create a resource and wait for it",
		Long: "Creates a resource, waits for the job (with a progress line) and prints the new\n" +
			"resource. Nouns: " + strings.Join(createNounNames(), ", ") + ".",
		Example: "  mplane ctl create zone --name zone1\n" +
			"  mplane ctl create offering --name small --cpu 1 --memory 1G\n" +
			"  mplane ctl create vm --name web1 --offering <uuid> --image <uuid> --l3 <uuid>",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE("noun", createNounNames()),
	}
	for _, spec := range createSpecs {
		cmd.AddCommand(newCreateNounCmd(g, spec, spec.noun.name, spec.noun.aliases))
	}
	return cmd
}

func createNounNames() []string {
	out := make([]string, len(createSpecs))
	for i, s := range createSpecs {
		out[i] = s.noun.name
	}
	return out
}

// newAddCmd is "ctl add host", the ZStack name of creating a host.
func newAddCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add host [flags]",
		Short: "Add a host",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE("noun", []string{"host"}),
	}
	for _, spec := range createSpecs {
		if spec.noun == hostNoun {
			cmd.AddCommand(newCreateNounCmd(g, spec, "host", []string{"hosts", "kvm-host"}))
		}
	}
	return cmd
}

func newCreateNounCmd(g *globals, spec createSpec, name string, aliases []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     name + " [flags]",
		Aliases: aliases,
		Short:   spec.short,
		Example: spec.example,
		Args:    argsNone,
	}
	vals := bindCreateFlags(cmd.Flags(), spec)
	cmd.RunE = runE(g, func(r *invocation, _ []string) error {
		path, params, err := vals.params(cmd.Flags())
		if err != nil {
			return err
		}
		job, err := r.c.Create(r.ctx(), path, params)
		if err != nil {
			return err
		}
		what := "create " + spec.noun.name
		if n, ok := params["name"].(string); ok {
			what += " " + n
		}
		return r.finishJob(job, what, spec.noun, vals.noWait, "")
	})
	return cmd
}
