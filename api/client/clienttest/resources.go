package clienttest

import (
	"bytes"
	"encoding/json"
	"math"
	"net"
	"sort"
	"strings"

	"mplane/errcode"
	"mplane/uid"
)

// collections are the query paths of the resources.
var collections = []string{"zones", "clusters", "hosts", "instance-offerings", "images", "l3-networks", "vm-instances"}

type collection struct {
	byUUID map[string]map[string]any
	order  []string // creation order
}

func (c *collection) put(inv map[string]any) {
	id := inv["uuid"].(string)
	if _, ok := c.byUUID[id]; !ok {
		c.order = append(c.order, id)
	}
	c.byUUID[id] = inv
}

func (c *collection) remove(id string) {
	delete(c.byUUID, id)
	for i, x := range c.order {
		if x == id {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

func (c *collection) list() []map[string]any {
	out := make([]map[string]any, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.byUUID[id])
	}
	return out
}

// Put stores inv (which must have a "uuid") in a collection ("zones",
// "hosts", "vm-instances", ...) as if it had been created.
func (s *Server) Put(coll string, inv map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.store[coll]
	if !ok {
		panic("clienttest: unknown collection " + coll)
	}
	c.put(clone(inv))
}

// Get returns a copy of a stored inventory, nil if there is none.
func (s *Server) Get(coll, uuid string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.store[coll]; ok {
		if inv, ok := c.byUUID[uuid]; ok {
			return clone(inv)
		}
	}
	return nil
}

// Count is the number of resources in a collection.
func (s *Server) Count(coll string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.store[coll].order)
}

func clone(m map[string]any) map[string]any {
	data, _ := json.Marshal(m)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out map[string]any
	_ = dec.Decode(&out)
	return out
}

type kind int

const (
	kString kind = iota
	kInt
	kStrings
)

type field struct {
	name     string
	kind     kind
	required bool
	ref      string // collection the UUID must exist in
}

// createSpecs is the contract's create parameters, by create path.
var createSpecs = map[string][]field{
	"zones": {{name: "name", required: true}, {name: "description"}},
	"clusters": {{name: "name", required: true}, {name: "zoneUuid", required: true, ref: "zones"},
		{name: "hypervisorType"}, {name: "description"}},
	"hosts/kvm": {{name: "name"}, {name: "managementIp", required: true}, {name: "agentPort", kind: kInt},
		{name: "clusterUuid", required: true, ref: "clusters"}, {name: "description"}},
	"instance-offerings": {{name: "name", required: true}, {name: "cpuNum", kind: kInt, required: true},
		{name: "memorySize", kind: kInt, required: true}, {name: "description"}},
	"images": {{name: "name", required: true}, {name: "url", required: true}, {name: "format"}, {name: "mediaType"},
		{name: "platform"}, {name: "size", kind: kInt}, {name: "description"}},
	"l3-networks": {{name: "name", required: true}, {name: "zoneUuid", required: true, ref: "zones"}, {name: "description"}},
	"ip-ranges": {{name: "name"}, {name: "startIp", required: true}, {name: "endIp", required: true},
		{name: "netmask", required: true}, {name: "gateway", required: true}},
	"vm-instances": {{name: "name", required: true}, {name: "instanceOfferingUuid", required: true, ref: "instance-offerings"},
		{name: "imageUuid", required: true, ref: "images"}, {name: "l3NetworkUuids", kind: kStrings, required: true, ref: "l3-networks"},
		{name: "defaultL3NetworkUuid", ref: "l3-networks"}, {name: "hostUuid", ref: "hosts"}, {name: "clusterUuid", ref: "clusters"},
		{name: "zoneUuid", ref: "zones"}, {name: "description"}},
}

// decodeParams checks {"params": {...}} against spec, strictly.
func (s *Server) decodeParamsLocked(body []byte, spec []field) (map[string]any, *errcode.Error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, invalid(`request body must be a JSON object like {"params": {...}}`)
	}
	raw, ok := top["params"]
	if !ok {
		return nil, invalid(`missing "params"; expected {"params": {...}}`)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var params map[string]any
	if err := dec.Decode(&params); err != nil || params == nil {
		return nil, invalid("params must be a JSON object")
	}
	known := map[string]field{}
	var names []string
	for _, f := range spec {
		known[f.name] = f
		names = append(names, f.name)
	}
	for k := range params {
		if _, ok := known[k]; !ok {
			return nil, invalid("params.%s: unknown field; allowed: %s", k, strings.Join(names, ", "))
		}
	}
	for _, f := range spec {
		v, ok := params[f.name]
		if !ok || v == nil {
			if f.required {
				return nil, invalid("params.%s is required", f.name)
			}
			continue
		}
		switch f.kind {
		case kString:
			str, ok := v.(string)
			if !ok {
				return nil, invalid("params.%s must be a string, got %s", f.name, jsonString(v))
			}
			if f.ref != "" && str != "" && s.store[f.ref].byUUID[str] == nil {
				return nil, invalid("params.%s: no %s with uuid %s", f.name, f.ref, str)
			}
		case kInt:
			n, ok := v.(json.Number)
			if _, err := n.Int64(); !ok || err != nil {
				return nil, invalid("params.%s must be an integer, got %s", f.name, jsonString(v))
			}
		case kStrings:
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return nil, invalid("params.%s must be a non-empty list of strings", f.name)
			}
			for _, x := range list {
				str, ok := x.(string)
				if !ok {
					return nil, invalid("params.%s must be a list of strings", f.name)
				}
				if f.ref != "" && s.store[f.ref].byUUID[str] == nil {
					return nil, invalid("params.%s: no %s with uuid %s", f.name, f.ref, str)
				}
			}
		}
	}
	return params, nil
}

func num(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	}
	return 0
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// create runs under s.mu; rel is the path after the prefix.
func (s *Server) create(rel string, body []byte) (any, *errcode.Error) {
	segs := strings.Split(strings.Trim(rel, "/"), "/")
	specName := rel
	var l3 map[string]any
	if len(segs) == 3 && segs[0] == "l3-networks" && segs[2] == "ip-ranges" {
		specName = "ip-ranges"
		if l3 = s.store["l3-networks"].byUUID[segs[1]]; l3 == nil {
			return nil, notFound("l3-networks", segs[1])
		}
	}
	spec, ok := createSpecs[specName]
	if !ok {
		return nil, errcode.New(errcode.ResourceNotFound, "no API route POST /v1/%s", rel)
	}
	p, err := s.decodeParamsLocked(body, spec)
	if err != nil {
		return nil, err
	}
	now := s.nowLocked()
	inv := map[string]any{"uuid": uid.New(), "createDate": now, "lastOpDate": now}
	for k, v := range p {
		inv[k] = v
	}
	def := func(k string, v any) {
		if _, ok := inv[k]; !ok {
			inv[k] = v
		}
	}
	coll := specName
	switch specName {
	case "zones":
		def("state", "Enabled")
		def("type", "zstack")
	case "clusters":
		def("hypervisorType", "KVM")
		def("state", "Enabled")
	case "hosts/kvm":
		coll = "hosts"
		if ip := net.ParseIP(str(p["managementIp"])); ip == nil {
			return nil, invalid("params.managementIp must be an IP address, got %q", str(p["managementIp"]))
		}
		def("name", p["managementIp"])
		def("agentPort", 7070)
		inv["zoneUuid"] = s.store["clusters"].byUUID[str(p["clusterUuid"])]["zoneUuid"]
		inv["hypervisorType"], inv["state"], inv["status"] = "KVM", "Enabled", "Connected"
		inv["cpuNum"], inv["totalCpuCapacity"], inv["availableCpuCapacity"] = 32, 32, 32
		inv["totalMemoryCapacity"], inv["availableMemoryCapacity"] = int64(128<<30), int64(128<<30)
	case "instance-offerings":
		if num(p["cpuNum"]) <= 0 || num(p["memorySize"]) <= 0 {
			return nil, invalid("params.cpuNum and params.memorySize must be > 0")
		}
		def("state", "Enabled")
		def("type", "UserVm")
	case "images":
		def("format", "qcow2")
		def("mediaType", "RootVolumeTemplate")
		def("platform", "Linux")
		def("size", 0)
		inv["state"], inv["status"] = "Enabled", "Ready"
	case "l3-networks":
		inv["state"], inv["type"], inv["ipRanges"] = "Enabled", "L3BasicNetwork", []any{}
	case "ip-ranges":
		for _, k := range []string{"startIp", "endIp", "netmask", "gateway"} {
			if net.ParseIP(str(p[k])).To4() == nil {
				return nil, invalid("params.%s must be an IPv4 address, got %q", k, str(p[k]))
			}
		}
		def("name", str(p["startIp"])+"-"+str(p["endIp"]))
		inv["l3NetworkUuid"] = l3["uuid"]
		l3["ipRanges"] = append(l3["ipRanges"].([]any), clone(inv))
		return map[string]any{"inventory": inv}, nil
	case "vm-instances":
		if e := s.placeVMLocked(inv); e != nil {
			return nil, e
		}
	}
	s.store[coll].put(inv)
	return map[string]any{"inventory": clone(inv)}, nil
}

// placeVMLocked fills a new VM from its offering, picks a host and gives
// every NIC an IP of its L3 network's first range.
func (s *Server) placeVMLocked(inv map[string]any) *errcode.Error {
	off := s.store["instance-offerings"].byUUID[str(inv["instanceOfferingUuid"])]
	inv["cpuNum"], inv["memorySize"] = off["cpuNum"], off["memorySize"]
	hostUUID := str(inv["hostUuid"])
	if hostUUID == "" {
		for _, h := range s.store["hosts"].list() {
			if h["status"] == "Connected" && num(h["availableMemoryCapacity"]) >= num(off["memorySize"]) {
				hostUUID = str(h["uuid"])
				break
			}
		}
	}
	if hostUUID == "" {
		return errcode.New(errcode.CapacityExhausted, "no connected host has %d bytes of memory free", num(off["memorySize"]))
	}
	host := s.store["hosts"].byUUID[hostUUID]
	host["availableMemoryCapacity"] = num(host["availableMemoryCapacity"]) - num(off["memorySize"])
	host["availableCpuCapacity"] = num(host["availableCpuCapacity"]) - num(off["cpuNum"])
	inv["hostUuid"], inv["lastHostUuid"], inv["clusterUuid"], inv["zoneUuid"] = hostUUID, hostUUID, host["clusterUuid"], host["zoneUuid"]
	inv["state"], inv["hypervisorType"], inv["type"] = "Running", "KVM", "UserVm"
	l3s := inv["l3NetworkUuids"].([]any)
	if str(inv["defaultL3NetworkUuid"]) == "" {
		inv["defaultL3NetworkUuid"] = l3s[0]
	}
	delete(inv, "l3NetworkUuids")
	var nics []any
	for i, l3UUID := range l3s {
		nic := map[string]any{"uuid": uid.New(), "l3NetworkUuid": l3UUID, "deviceId": i, "vmInstanceUuid": inv["uuid"]}
		if ranges, _ := s.store["l3-networks"].byUUID[str(l3UUID)]["ipRanges"].([]any); len(ranges) > 0 {
			r := ranges[0].(map[string]any)
			ip := net.ParseIP(str(r["startIp"])).To4()
			used := 0
			for _, vm := range s.store["vm-instances"].list() {
				for _, n := range vm["vmNics"].([]any) {
					if n.(map[string]any)["l3NetworkUuid"] == l3UUID {
						used++
					}
				}
			}
			v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
			v += uint32(min(used, math.MaxInt32))
			nic["ip"] = net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String()
			nic["netmask"], nic["gateway"] = r["netmask"], r["gateway"]
		}
		nics = append(nics, nic)
	}
	inv["vmNics"] = nics
	return nil
}

// actions are the valid actions by collection.
var actions = map[string][]string{
	"vm-instances": {"startVmInstance", "stopVmInstance", "rebootVmInstance"},
	"hosts":        {"reconnectHost"},
}

// action runs under s.mu.
func (s *Server) action(coll, uuid string, body []byte) (any, *errcode.Error) {
	valid, ok := actions[coll]
	if !ok {
		return nil, errcode.New(errcode.ResourceNotFound, "no actions on %s", coll)
	}
	var top map[string]map[string]any
	if err := json.Unmarshal(body, &top); err != nil || len(top) != 1 {
		return nil, invalid(`the body must be one action, {"<action>": {...}}; valid actions: %s`, strings.Join(valid, ", "))
	}
	var name string
	var args map[string]any
	for k, v := range top {
		name, args = k, v
	}
	known := false
	for _, v := range valid {
		known = known || v == name
	}
	if !known {
		return nil, invalid("unknown action %q; valid actions: %s", name, strings.Join(valid, ", "))
	}
	inv := s.store[coll].byUUID[uuid]
	if inv == nil {
		return nil, notFound(coll, uuid)
	}
	switch name {
	case "startVmInstance":
		if inv["state"] != "Stopped" && inv["state"] != "Running" {
			return nil, errcode.New(errcode.InvalidState, "vm %s is %s", uuid, inv["state"])
		}
		inv["state"], inv["hostUuid"] = "Running", inv["lastHostUuid"]
	case "stopVmInstance":
		for k := range args {
			if k != "type" {
				return nil, invalid("stopVmInstance.%s: unknown field; allowed: type", k)
			}
		}
		if t := str(args["type"]); t != "" && t != "grace" && t != "cold" {
			return nil, invalid("stopVmInstance.type must be grace or cold, got %q", t)
		}
		inv["state"], inv["hostUuid"] = "Stopped", nil
	case "rebootVmInstance":
		if inv["state"] != "Running" {
			return nil, errcode.New(errcode.InvalidState, "vm %s is %s, only a Running vm can be rebooted", uuid, inv["state"])
		}
	case "reconnectHost":
		inv["status"] = "Connected"
	}
	inv["lastOpDate"] = s.nowLocked()
	return map[string]any{"inventory": clone(inv)}, nil
}

// delete runs under s.mu.
func (s *Server) delete(coll, uuid string) (any, *errcode.Error) {
	c, ok := s.store[coll]
	if !ok {
		return nil, errcode.New(errcode.ResourceNotFound, "no API route DELETE /v1/%s", coll)
	}
	if c.byUUID[uuid] == nil {
		return nil, notFound(coll, uuid)
	}
	c.remove(uuid)
	return map[string]any{}, nil
}

// sortInventories sorts by field, ascending unless desc, keeping creation
// order among equals.
func sortInventories(list []map[string]any, field string, desc bool) {
	sort.SliceStable(list, func(i, j int) bool {
		c := compare(list[i][field], list[j][field])
		if desc {
			return c > 0
		}
		return c < 0
	})
}
