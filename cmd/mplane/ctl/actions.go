package ctl

import (
	"strings"

	"github.com/spf13/cobra"

	"mplane/api/client"
)

func newDeleteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete <noun> <uuid>",
		Short: "Delete a resource (for a VM: destroy it)",
		Long:  "Deletes a resource and waits for the job. Nouns: " + strings.Join(nounNames(listable), ", ") + ".",
		Example: "  mplane ctl delete vm 2f1e0b6c8a7d4e0f9b3c5d7e9f1a2b3c\n" +
			"  mplane ctl delete zone <uuid> --mode enforcing",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE("noun", nounNames(listable)),
	}
	for _, n := range listable {
		cmd.AddCommand(newDeleteNounCmd(g, n, n.name, n.aliases))
	}
	return cmd
}

func newDeleteNounCmd(g *globals, n *noun, name string, aliases []string) *cobra.Command {
	var (
		mode   string
		noWait bool
	)
	cmd := &cobra.Command{
		Use:     name + " <uuid>",
		Aliases: aliases,
		Short:   "Delete one of the " + n.plural,
		Args:    argsUUID(n.name + " UUID"),
	}
	if name == "destroy" {
		cmd.Short = "Destroy a VM (same as `ctl delete vm`)"
	}
	cmd.Flags().StringVar(&mode, "mode", "", "delete mode: permissive (refuse if others depend on it) or enforcing (delete them too); default: the server's (permissive)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the job: print its location and return")
	cmd.RunE = runE(g, func(r *invocation, args []string) error {
		var dm client.DeleteMode
		switch strings.ToLower(mode) {
		case "":
		case "permissive":
			dm = client.DeletePermissive
		case "enforcing":
			dm = client.DeleteEnforcing
		default:
			return usageError("--mode must be permissive or enforcing, got %q", mode)
		}
		job, err := r.c.Delete(r.ctx(), n.path, args[0], dm)
		if err != nil {
			return err
		}
		return r.finishJob(job, "delete "+n.name+" "+args[0], n, noWait, "Deleted "+n.name+" "+args[0])
	})
	return cmd
}

// actionCmd is one "ctl vm <verb>" or "ctl host <verb>" command; its
// result prints as one of n.
func actionCmd(g *globals, n *noun, verb, action, short, example string, body func() (any, error), extra func(*cobra.Command)) *cobra.Command {
	return actionCmdOf(g, n, n, verb, action, short, example, body, extra)
}

// actionCmdOf is actionCmd for an action whose result is another noun's:
// "ctl snapshot revert" answers the volume.
func actionCmdOf(g *globals, n, result *noun, verb, action, short, example string, body func() (any, error), extra func(*cobra.Command)) *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:     verb + " <uuid>",
		Short:   short,
		Example: example,
		Args:    argsUUID(n.name + " UUID"),
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the job: print its location and return")
	if extra != nil {
		extra(cmd)
	}
	cmd.RunE = runE(g, func(r *invocation, args []string) error {
		var b any
		if body != nil {
			var err error
			if b, err = body(); err != nil {
				return err
			}
		}
		job, err := r.c.Action(r.ctx(), n.path, args[0], action, b)
		if err != nil {
			return err
		}
		return r.finishJob(job, verb+" "+n.name+" "+args[0], result, noWait, "")
	})
	return cmd
}

func newVMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "vm <start|stop|reboot|destroy|attach-l3|detach-nic|set-static-ip|set-default-l3> <uuid>",
		Aliases: vmNoun.aliases,
		Short:   "Start, stop, reboot or destroy a VM; attach and detach its NICs",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE("vm action", nil),
	}
	var stopType string
	cmd.AddCommand(
		actionCmd(g, vmNoun, "start", "startVmInstance", "Start a stopped VM", "  mplane ctl vm start <uuid>", nil, nil),
		actionCmd(g, vmNoun, "stop", "stopVmInstance", "Stop a VM (grace: ask the guest; cold: power off)",
			"  mplane ctl vm stop <uuid>\n  mplane ctl vm stop <uuid> --type cold",
			func() (any, error) {
				switch strings.ToLower(stopType) {
				case "grace", "cold":
					return map[string]string{"type": strings.ToLower(stopType)}, nil
				}
				return nil, usageError("--type must be grace or cold, got %q", stopType)
			},
			func(c *cobra.Command) {
				c.Flags().StringVar(&stopType, "type", "grace", "grace (shut the guest down) or cold (power off)")
			}),
		actionCmd(g, vmNoun, "reboot", "rebootVmInstance", "Reboot a running VM", "  mplane ctl vm reboot <uuid>", nil, nil),
		newDeleteNounCmd(g, vmNoun, "destroy", nil),
	)
	cmd.AddCommand(vmNicCmds(g)...)
	return cmd
}

func newHostCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host <reconnect> <uuid>",
		Aliases: hostNoun.aliases,
		Short:   "Reconnect a host",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE("host action", nil),
	}
	cmd.AddCommand(actionCmd(g, hostNoun, "reconnect", "reconnectHost", "Reconnect a host's agent", "  mplane ctl host reconnect <uuid>", nil, nil))
	return cmd
}

func newSnapshotCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "snapshot <revert> <uuid>",
		Aliases: snapshotNoun.aliases,
		Short:   "Revert a volume to a snapshot",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE("snapshot action", nil),
	}
	cmd.AddCommand(actionCmdOf(g, snapshotNoun, volumeNoun, "revert", "revertVolumeFromSnapshot",
		"Revert the snapshot's volume to it: the volume's content becomes the snapshot's (prints the volume)",
		"  mplane ctl snapshot revert <snapshot-uuid>", nil, nil))
	return cmd
}
