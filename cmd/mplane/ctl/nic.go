package ctl

import (
	"strings"

	"github.com/spf13/cobra"
)

// vmNicCmds are the "ctl vm" commands of a VM's NICs: attach-l3,
// detach-nic, set-static-ip and set-default-l3; each prints the VM.
func vmNicCmds(g *globals) []*cobra.Command {
	var attachL3, attachIP, staticL3, staticIP, defaultL3 string
	attach := vmCallCmd(g, "attach-l3", "Give a running or stopped VM a NIC on an L3 network (with a static IP if --ip is given)",
		"  mplane ctl vm attach-l3 <vm-uuid> --l3 <l3-uuid>\n  mplane ctl vm attach-l3 <vm-uuid> --l3 <l3-uuid> --ip 10.0.0.50",
		func(r *invocation, vm string) error {
			if err := flagUUID("l3", attachL3); err != nil {
				return err
			}
			params := map[string]any{}
			if ip := strings.TrimSpace(attachIP); ip != "" {
				params["staticIp"] = ip
			}
			job, err := r.c.Create(r.ctx(), "vm-instances/"+vm+"/l3-networks/"+strings.TrimSpace(attachL3), params)
			if err != nil {
				return err
			}
			return r.finishJob(job, "attach l3 "+attachL3+" to vm "+vm, vmNoun, false, "")
		})
	attach.Flags().StringVar(&attachL3, "l3", "", "UUID of the L3 network (required)")
	attach.Flags().StringVar(&attachIP, "ip", "", "static IP of the new NIC (default: a free one of the L3 network's ranges)")

	detach := &cobra.Command{
		Use:     "detach-nic <nic-uuid>",
		Short:   "Remove a NIC from its VM (unplugged if the VM runs); its IP is released",
		Example: "  mplane ctl vm detach-nic <nic-uuid>",
		Args:    argsUUID("NIC UUID"),
	}
	detach.RunE = runE(g, func(r *invocation, args []string) error {
		job, err := r.c.Delete(r.ctx(), "vm-instances/nics", args[0], "")
		if err != nil {
			return err
		}
		return r.finishJob(job, "detach nic "+args[0], vmNoun, false, "")
	})

	static := actionCmd(g, vmNoun, "set-static-ip", "setVmStaticIp",
		"Give the VM's NIC on an L3 network a fixed address (the old one is released)",
		"  mplane ctl vm set-static-ip <vm-uuid> --l3 <l3-uuid> --ip 10.0.0.60",
		func() (any, error) {
			if err := flagUUID("l3", staticL3); err != nil {
				return nil, err
			}
			if strings.TrimSpace(staticIP) == "" {
				return nil, usageError("missing required flags: --ip")
			}
			return map[string]string{"l3NetworkUuid": strings.TrimSpace(staticL3), "ip": strings.TrimSpace(staticIP)}, nil
		},
		func(c *cobra.Command) {
			c.Flags().StringVar(&staticL3, "l3", "", "UUID of the L3 network of the NIC (required)")
			c.Flags().StringVar(&staticIP, "ip", "", "the address (required)")
		})
	def := actionCmd(g, vmNoun, "set-default-l3", "updateVmInstance",
		"Make one of the VM's L3 networks its default (its gateway and DNS are the guest's)",
		"  mplane ctl vm set-default-l3 <vm-uuid> --l3 <l3-uuid>",
		func() (any, error) {
			if err := flagUUID("l3", defaultL3); err != nil {
				return nil, err
			}
			return map[string]string{"defaultL3NetworkUuid": strings.TrimSpace(defaultL3)}, nil
		},
		func(c *cobra.Command) {
			c.Flags().StringVar(&defaultL3, "l3", "", "UUID of the L3 network, one the VM has a NIC on (required)")
		})
	return []*cobra.Command{attach, detach, static, def}
}

// flagUUID checks a required UUID flag's value.
func flagUUID(flag, v string) error {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return usageError("missing required flags: --%s", flag)
	case strings.Contains(v, "/"):
		return usageError("--%s must be a UUID, got %q", flag, v)
	}
	return nil
}

// vmCallCmd is a "ctl vm <verb> <vm-uuid>" command that run starts and
// finishes.
func vmCallCmd(g *globals, verb, short, example string, run func(r *invocation, vm string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:     verb + " <vm-uuid>",
		Short:   short,
		Example: example,
		Args:    argsUUID("vm UUID"),
	}
	cmd.RunE = runE(g, func(r *invocation, args []string) error {
		return run(r, args[0])
	})
	return cmd
}
