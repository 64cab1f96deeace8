package ctl

import "encoding/json"

// noun is one kind of resource of mplane ctl.
type noun struct {
	name    string   // "vm"
	aliases []string // "vms", "vm-instance", "vm-instances"
	plural  string   // for messages: "VMs"
	path    string   // query, get and delete path: "vm-instances"
	columns []column
}

var (
	zoneNoun = &noun{
		name: "zone", aliases: []string{"zones"}, plural: "zones", path: "zones",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("STATE", "state"), field("DESCRIPTION", "description")},
	}
	clusterNoun = &noun{
		name: "cluster", aliases: []string{"clusters"}, plural: "clusters", path: "clusters",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("ZONE", "zoneUuid"),
			field("HYPERVISOR", "hypervisorType"), field("STATE", "state")},
	}
	hostNoun = &noun{
		name: "host", aliases: []string{"hosts"}, plural: "hosts", path: "hosts",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("MANAGEMENT IP", "managementIp"),
			field("STATUS", "status"), field("STATE", "state"),
			ratio("CPU", "availableCpuCapacity", "totalCpuCapacity", false),
			ratio("MEMORY", "availableMemoryCapacity", "totalMemoryCapacity", true)},
	}
	offeringNoun = &noun{
		name: "offering", aliases: []string{"offerings", "instance-offering", "instance-offerings"},
		plural: "instance offerings", path: "instance-offerings",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("CPU", "cpuNum"),
			sizeField("MEMORY", "memorySize"), field("STATE", "state")},
	}
	diskOfferingNoun = &noun{
		name: "disk-offering", aliases: []string{"disk-offerings"}, plural: "disk offerings", path: "disk-offerings",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), sizeField("SIZE", "diskSize"), field("STATE", "state")},
	}
	imageNoun = &noun{
		name: "image", aliases: []string{"images"}, plural: "images", path: "images",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("FORMAT", "format"),
			field("MEDIA TYPE", "mediaType"), field("PLATFORM", "platform"), sizeField("SIZE", "size"),
			field("STATUS", "status")},
	}
	l2Noun = &noun{
		name: "l2", aliases: []string{"l2s", "l2-network", "l2-networks"}, plural: "L2 networks", path: "l2-networks",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("TYPE", "type"), field("ZONE", "zoneUuid"),
			field("INTERFACE", "physicalInterface"), {"VLAN/VNI", func(i inventory) string {
				if i["vlan"] != nil {
					return text(i["vlan"])
				}
				return text(i["vni"])
			}}, field("POOL", "poolUuid"), stringsField("CLUSTERS", "attachedClusterUuids")},
	}
	// vniRangeNoun is a VXLAN pool's range of VNIs.
	vniRangeNoun = &noun{
		name: "vni-range", aliases: []string{"vni-ranges"}, plural: "VNI ranges", path: "l2-networks/vxlan-pool/vni-range",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("POOL", "l2NetworkUuid"),
			field("START", "startVni"), field("END", "endVni")},
	}
	l3Noun = &noun{
		name: "l3", aliases: []string{"l3s", "l3-network", "l3-networks"}, plural: "L3 networks", path: "l3-networks",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("ZONE", "zoneUuid"), field("L2", "l2NetworkUuid"), field("STATE", "state"),
			listField("IP RANGES", "ipRanges", func(r map[string]any) string {
				if r["startIp"] == nil {
					return ""
				}
				return text(r["startIp"]) + "-" + text(r["endIp"])
			})},
	}
	vmNoun = &noun{
		name: "vm", aliases: []string{"vms", "vm-instance", "vm-instances"}, plural: "VMs", path: "vm-instances",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("STATE", "state"), field("HOST", "hostUuid"),
			listField("IP", "vmNics", func(n map[string]any) string { return textOrEmpty(n["ip"]) }),
			field("CPU", "cpuNum"), sizeField("MEMORY", "memorySize"), field("ROOT VOLUME", "rootVolumeUuid")},
	}
	primaryStorageNoun = &noun{
		name: "primary-storage", aliases: []string{"ps"}, plural: "primary storage", path: "primary-storage",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("TYPE", "type"), field("URL", "url"),
			field("STATUS", "status"), field("STATE", "state"), ratio("CAPACITY", "availableCapacity", "totalCapacity", true)},
	}
	backupStorageNoun = &noun{
		name: "backup-storage", aliases: []string{"bs"}, plural: "backup storage", path: "backup-storage",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("HOSTNAME", "hostname"), field("PORT", "agentPort"),
			field("STATUS", "status"), field("STATE", "state"), ratio("CAPACITY", "availableCapacity", "totalCapacity", true)},
	}
	volumeNoun = &noun{
		name: "volume", aliases: []string{"volumes"}, plural: "volumes", path: "volumes",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("TYPE", "type"), field("STATUS", "status"),
			sizeField("SIZE", "size"), field("PRIMARY STORAGE", "primaryStorageUuid"), field("VM", "vmInstanceUuid")},
	}
	snapshotNoun = &noun{
		name: "snapshot", aliases: []string{"snapshots", "volume-snapshot", "volume-snapshots"}, plural: "volume snapshots",
		path: "volume-snapshots",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("VOLUME", "volumeUuid"), field("TYPE", "type"),
			field("STATUS", "status"), sizeField("SIZE", "size")},
	}
	// ipRangeNoun is created under an L3 network and not listed on its own.
	ipRangeNoun = &noun{
		name: "ip-range", aliases: []string{"ip-ranges", "iprange"}, plural: "IP ranges",
		columns: []column{field("UUID", "uuid"), field("NAME", "name"), field("L3", "l3NetworkUuid"),
			field("START", "startIp"), field("END", "endIp"), field("NETMASK", "netmask"), field("GATEWAY", "gateway")},
	}
	// jobNoun renders a result whose kind is unknown (ctl wait).
	jobNoun = &noun{name: "resource", plural: "resources", columns: genericColumns()}
)

// listable are the nouns of list, get and delete, in help order.
var listable = []*noun{zoneNoun, clusterNoun, hostNoun, offeringNoun, diskOfferingNoun, imageNoun, l2Noun, vniRangeNoun, l3Noun, vmNoun,
	primaryStorageNoun, backupStorageNoun, volumeNoun, snapshotNoun}

func nounNames(ns []*noun) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.name
	}
	return out
}

func textOrEmpty(v any) string {
	if s := text(v); s != none {
		return s
	}
	return ""
}

// renderOne prints one inventory as a row of the noun's table or, with
// -o json, as the JSON object the server returned.
func (r *invocation) renderOne(n *noun, raw json.RawMessage) error {
	if r.json {
		return printJSON(r.out, raw)
	}
	inv, err := decodeInventory(raw)
	if err != nil {
		return err
	}
	return printTable(r.out, n.columns, []inventory{inv})
}
