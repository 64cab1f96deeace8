package main

import "encoding/json"

// ctlNoun is one kind of resource of mplane ctl.
type ctlNoun struct {
	name    string   // "vm"
	aliases []string // "vms", "vm-instance", "vm-instances"
	plural  string   // for messages: "VMs"
	path    string   // query, get and delete path: "vm-instances"
	columns []ctlColumn
}

var (
	ctlZoneNoun = &ctlNoun{
		name: "zone", aliases: []string{"zones"}, plural: "zones", path: "zones",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("STATE", "state"), ctlField("DESCRIPTION", "description")},
	}
	ctlClusterNoun = &ctlNoun{
		name: "cluster", aliases: []string{"clusters"}, plural: "clusters", path: "clusters",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("ZONE", "zoneUuid"),
			ctlField("HYPERVISOR", "hypervisorType"), ctlField("STATE", "state")},
	}
	ctlHostNoun = &ctlNoun{
		name: "host", aliases: []string{"hosts"}, plural: "hosts", path: "hosts",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("MANAGEMENT IP", "managementIp"),
			ctlField("STATUS", "status"), ctlField("STATE", "state"),
			ctlRatio("CPU", "availableCpuCapacity", "totalCpuCapacity", false),
			ctlRatio("MEMORY", "availableMemoryCapacity", "totalMemoryCapacity", true)},
	}
	ctlOfferingNoun = &ctlNoun{
		name: "offering", aliases: []string{"offerings", "instance-offering", "instance-offerings"},
		plural: "instance offerings", path: "instance-offerings",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("CPU", "cpuNum"),
			ctlSizeField("MEMORY", "memorySize"), ctlField("STATE", "state")},
	}
	ctlImageNoun = &ctlNoun{
		name: "image", aliases: []string{"images"}, plural: "images", path: "images",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("FORMAT", "format"),
			ctlField("MEDIA TYPE", "mediaType"), ctlField("PLATFORM", "platform"), ctlSizeField("SIZE", "size"),
			ctlField("STATUS", "status")},
	}
	ctlL3Noun = &ctlNoun{
		name: "l3", aliases: []string{"l3s", "l3-network", "l3-networks"}, plural: "L3 networks", path: "l3-networks",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("ZONE", "zoneUuid"), ctlField("STATE", "state"),
			ctlListField("IP RANGES", "ipRanges", func(r map[string]any) string {
				if r["startIp"] == nil {
					return ""
				}
				return ctlText(r["startIp"]) + "-" + ctlText(r["endIp"])
			})},
	}
	ctlVMNoun = &ctlNoun{
		name: "vm", aliases: []string{"vms", "vm-instance", "vm-instances"}, plural: "VMs", path: "vm-instances",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("STATE", "state"), ctlField("HOST", "hostUuid"),
			ctlListField("IP", "vmNics", func(n map[string]any) string { return ctlTextOrEmpty(n["ip"]) }),
			ctlField("CPU", "cpuNum"), ctlSizeField("MEMORY", "memorySize")},
	}
	// ipRangeNoun is created under an L3 network and not listed on its own.
	ctlIPRangeNoun = &ctlNoun{
		name: "ip-range", aliases: []string{"ip-ranges", "iprange"}, plural: "IP ranges",
		columns: []ctlColumn{ctlField("UUID", "uuid"), ctlField("NAME", "name"), ctlField("L3", "l3NetworkUuid"),
			ctlField("START", "startIp"), ctlField("END", "endIp"), ctlField("NETMASK", "netmask"), ctlField("GATEWAY", "gateway")},
	}
	// jobNoun renders a result whose kind is unknown (ctl wait).
	ctlJobNoun = &ctlNoun{name: "resource", plural: "resources", columns: ctlGenericColumns()}
)

// ctlListable are the nouns of list, get and delete, in help order.
var ctlListable = []*ctlNoun{ctlZoneNoun, ctlClusterNoun, ctlHostNoun, ctlOfferingNoun, ctlImageNoun, ctlL3Noun, ctlVMNoun}

func ctlNounNames(ns []*ctlNoun) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.name
	}
	return out
}

func ctlTextOrEmpty(v any) string {
	if s := ctlText(v); s != ctlNone {
		return s
	}
	return ""
}

// renderOne prints one inventory as a row of the noun's table or, with
// -o json, as the JSON object the server returned.
func (r *ctlRun) renderOne(n *ctlNoun, raw json.RawMessage) error {
	if r.json {
		return ctlPrintJSON(r.out, raw)
	}
	inv, err := ctlDecodeInventory(raw)
	if err != nil {
		return err
	}
	return ctlPrintTable(r.out, n.columns, []ctlInventory{inv})
}
