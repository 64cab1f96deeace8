package portal

import "mplane/api/query"

// The queryable fields of each resource: API names (ZStack's) to columns.
func f(name, column string, t query.Type) query.Field {
	return query.Field{Name: name, Column: column, Type: t, Key: name == "uuid"}
}

var (
	common = []query.Field{
		f("uuid", "uuid", query.String), f("name", "name", query.String), f("description", "description", query.String),
		f("createDate", "create_date", query.Time), f("lastOpDate", "last_op_date", query.Time),
	}

	zoneSchema = query.MustSchema(append(common,
		f("state", "state", query.String), f("type", "type", query.String))...)

	clusterSchema = query.MustSchema(append(common,
		f("zoneUuid", "zone_uuid", query.String), f("hypervisorType", "hypervisor_type", query.String),
		f("state", "state", query.String), f("type", "type", query.String))...)

	hostSchema = query.MustSchema(append(common,
		f("managementIp", "management_ip", query.String), f("agentPort", "agent_port", query.Int),
		f("zoneUuid", "zone_uuid", query.String), f("clusterUuid", "cluster_uuid", query.String),
		f("hypervisorType", "hypervisor_type", query.String), f("state", "state", query.String),
		f("status", "status", query.String), f("cpuNum", "cpu_num", query.Int),
		f("totalCpuCapacity", "total_cpu", query.Int), f("availableCpuCapacity", "available_cpu", query.Int),
		f("totalMemoryCapacity", "total_memory", query.Int), f("availableMemoryCapacity", "available_memory", query.Int))...)

	offeringSchema = query.MustSchema(append(common,
		f("cpuNum", "cpu_num", query.Int), f("cpuSpeed", "cpu_speed", query.Int), f("memorySize", "memory_size", query.Int),
		f("state", "state", query.String), f("type", "type", query.String))...)

	imageSchema = query.MustSchema(append(common,
		f("url", "url", query.String), f("format", "format", query.String), f("mediaType", "media_type", query.String),
		f("platform", "platform", query.String), f("size", "size", query.Int), f("state", "state", query.String),
		f("status", "status", query.String))...)

	l3Schema = query.MustSchema(append(common,
		f("zoneUuid", "zone_uuid", query.String), f("type", "type", query.String), f("state", "state", query.String))...)

	ipRangeSchema = query.MustSchema(append(common,
		f("l3NetworkUuid", "l3_network_uuid", query.String), f("startIp", "start_ip", query.String),
		f("endIp", "end_ip", query.String), f("netmask", "netmask", query.String), f("gateway", "gateway", query.String),
		f("networkCidr", "network_cidr", query.String), f("ipVersion", "ip_version", query.Int))...)

	vmSchema = query.MustSchema(append(common,
		f("zoneUuid", "zone_uuid", query.String), f("clusterUuid", "cluster_uuid", query.String),
		f("hostUuid", "host_uuid", query.String), f("lastHostUuid", "last_host_uuid", query.String),
		f("instanceOfferingUuid", "instance_offering_uuid", query.String), f("imageUuid", "image_uuid", query.String),
		f("defaultL3NetworkUuid", "default_l3_network_uuid", query.String), f("type", "type", query.String),
		f("hypervisorType", "hypervisor_type", query.String), f("platform", "platform", query.String),
		f("cpuNum", "cpu_num", query.Int), f("memorySize", "memory_size", query.Int), f("state", "state", query.String),
		query.Field{Name: "vmNics"})...)
)
