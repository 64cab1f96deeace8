package ctl

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"mplane/api/client"
)

// linkSpec is one "ctl attach <noun>" or "ctl detach <noun>" command: the
// noun's UUID is the argument, the other end's (a cluster, a VM) a flag.
type linkSpec struct {
	verb     string // "attach" or "detach"
	noun     *noun  // the argument's kind; the result prints as one
	flag     string // the flag naming the other end: "cluster", "vm"
	other    string // the other end in messages: "cluster", "VM"
	required bool   // the flag must be given
	short    string
	example  string
	// start starts the job; other is "" when the flag was not given.
	start func(r *invocation, uuid, other string) (*client.Job, error)
	// note, if set, is a remark on the result, printed to stderr when it
	// is not "".
	note func(result inventory, uuid, other string) string
}

var attachSpecs = []linkSpec{
	{verb: "attach", noun: primaryStorageNoun, flag: "cluster", other: "cluster", required: true,
		short:   "Attach primary storage to a cluster of its zone (its hosts measure it)",
		example: "  mplane ctl attach primary-storage <ps-uuid> --cluster <cluster-uuid>",
		start: func(r *invocation, ps, cluster string) (*client.Job, error) {
			return r.c.Create(r.ctx(), "clusters/"+cluster+"/primary-storage/"+ps, nil)
		}},
	{verb: "attach", noun: l2Noun, flag: "cluster", other: "cluster", required: true,
		short:   "Attach an L2 network to a cluster of its zone (its hosts reach it); again is a no-op",
		example: "  mplane ctl attach l2 <l2-uuid> --cluster <cluster-uuid>",
		start: func(r *invocation, l2, cluster string) (*client.Job, error) {
			return r.c.Create(r.ctx(), "l2-networks/"+l2+"/clusters/"+cluster, nil)
		}},
	{verb: "attach", noun: volumeNoun, flag: "vm", other: "VM", required: true,
		short:   "Attach a data volume to a running or stopped VM",
		example: "  mplane ctl attach volume <volume-uuid> --vm <vm-uuid>",
		start: func(r *invocation, vol, vm string) (*client.Job, error) {
			return r.c.Create(r.ctx(), "volumes/"+vol+"/vm-instances/"+vm, nil)
		}},
}

var detachSpecs = []linkSpec{
	{verb: "detach", noun: primaryStorageNoun, flag: "cluster", other: "cluster", required: true,
		short:   "Detach primary storage from a cluster (refused while volumes on it are used there)",
		example: "  mplane ctl detach primary-storage <ps-uuid> --cluster <cluster-uuid>",
		start: func(r *invocation, ps, cluster string) (*client.Job, error) {
			return r.c.Delete(r.ctx(), "clusters/"+cluster+"/primary-storage", ps, "")
		}},
	{verb: "detach", noun: l2Noun, flag: "cluster", other: "cluster", required: true,
		short:   "Detach an L2 network from a cluster (refused while a VM of the cluster has a NIC on it)",
		example: "  mplane ctl detach l2 <l2-uuid> --cluster <cluster-uuid>",
		start: func(r *invocation, l2, cluster string) (*client.Job, error) {
			return r.c.Delete(r.ctx(), "l2-networks/"+l2+"/clusters", cluster, "")
		}},
	{verb: "detach", noun: volumeNoun, flag: "vm", other: "VM",
		short: "Detach a data volume from its VM",
		example: "  mplane ctl detach volume <volume-uuid>\n" +
			"  mplane ctl detach volume <volume-uuid> --vm <vm-uuid>",
		start: func(r *invocation, vol, vm string) (*client.Job, error) {
			var opts []client.CallOption
			if vm != "" {
				opts = append(opts, client.QueryParam("vmUuid", vm))
			}
			// The server refuses a VM the volume is not attached to.
			return r.c.Delete(r.ctx(), "volumes/"+vol, "vm-instances", "", opts...)
		}},
}

func newAttachCmd(g *globals) *cobra.Command {
	return newLinkGroupCmd(g, attachSpecs, &cobra.Command{
		Use:   "attach <noun> <uuid> [flags]",
		Short: "Attach primary storage or an L2 network to a cluster, or a data volume to a VM",
		Long: "Attaches a resource to another and waits for the job; prints the attached\n" +
			"resource. Nouns: " + strings.Join(linkNounNames(attachSpecs), ", ") + ".",
		Example: "  mplane ctl attach primary-storage <ps-uuid> --cluster <cluster-uuid>\n" +
			"  mplane ctl attach l2 <l2-uuid> --cluster <cluster-uuid>\n" +
			"  mplane ctl attach volume <volume-uuid> --vm <vm-uuid>",
	})
}

func newDetachCmd(g *globals) *cobra.Command {
	return newLinkGroupCmd(g, detachSpecs, &cobra.Command{
		Use:   "detach <noun> <uuid> [flags]",
		Short: "Detach primary storage or an L2 network from a cluster, or a data volume from its VM",
		Long: "Detaches a resource from another and waits for the job; prints the detached\n" +
			"resource. Nouns: " + strings.Join(linkNounNames(detachSpecs), ", ") + ".",
		Example: "  mplane ctl detach primary-storage <ps-uuid> --cluster <cluster-uuid>\n" +
			"  mplane ctl detach l2 <l2-uuid> --cluster <cluster-uuid>\n" +
			"  mplane ctl detach volume <volume-uuid>",
	})
}

func newLinkGroupCmd(g *globals, specs []linkSpec, cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = groupRunE("noun", linkNounNames(specs))
	for _, spec := range specs {
		cmd.AddCommand(newLinkCmd(g, spec))
	}
	return cmd
}

func linkNounNames(specs []linkSpec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.noun.name
	}
	return out
}

func newLinkCmd(g *globals, spec linkSpec) *cobra.Command {
	var (
		other  string
		noWait bool
	)
	use := spec.noun.name + " <uuid> --" + spec.flag + " <" + spec.flag + "-uuid>"
	if !spec.required {
		use = spec.noun.name + " <uuid> [--" + spec.flag + " <" + spec.flag + "-uuid>]"
	}
	cmd := &cobra.Command{
		Use:     use,
		Aliases: spec.noun.aliases,
		Short:   spec.short,
		Example: spec.example,
		Args:    argsUUID(spec.noun.name + " UUID"),
	}
	usage := "UUID of the " + spec.other
	if spec.required {
		usage += " (required)"
	} else {
		usage += " (default: the one it is attached to)"
	}
	cmd.Flags().StringVar(&other, spec.flag, "", usage)
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the job: print its location and return")
	cmd.RunE = runE(g, func(r *invocation, args []string) error {
		uuid := strings.TrimSpace(args[0])
		given := cmd.Flags().Changed(spec.flag)
		other = strings.TrimSpace(other)
		switch {
		case strings.Contains(uuid, "/"):
			return usageError("%s UUID must be a UUID, got %q", spec.noun.name, uuid)
		case !given && spec.required:
			return usageError("missing required flags: --%s", spec.flag)
		case given && (other == "" || strings.Contains(other, "/")):
			return usageError("--%s must be a UUID, got %q", spec.flag, other)
		}
		job, err := spec.start(r, uuid, other)
		if err != nil {
			return err
		}
		// "attach volume <uuid> to vm <uuid>", "detach volume <uuid>"
		target := spec.noun.name + " " + uuid
		if other != "" {
			prep := " to "
			if spec.verb == "detach" {
				prep = " from "
			}
			target += prep + spec.flag + " " + other
		}
		done := strings.ToUpper(spec.verb[:1]) + spec.verb[1:] + "ed " + target
		if noWait || spec.note == nil {
			return r.finishJob(job, spec.verb+" "+target, spec.noun, noWait, done)
		}
		raw, err := r.waitJob(job, spec.verb+" "+target)
		if err != nil {
			return err
		}
		if raw != nil {
			if inv, err := decodeInventory(raw); err == nil {
				if note := spec.note(inv, uuid, other); note != "" {
					fmt.Fprintln(r.errOut, "note: "+note)
				}
			}
		}
		return r.printResult(spec.noun, raw, done)
	})
	return cmd
}
