package main

// state.dump: the agent's three tables (main-table routes of some devices,
// the neighbours and the FDB of one device; IPv4 unless the request asks
// for "inet6"), one kernel dump
// each, in a compact text encoding.
//
// Why not vishvananda's RouteList/NeighList: at 50,000 peers a resync reads
// 150,000 entries, and turning each into a netlink.Route or Neigh (net.IP,
// IPNet, attribute maps), then into a JSON object, then parsing that object
// again in Node cost more than the kernel's dump. Here the raw messages are
// read in place, the kernel filters the neighbour and FDB dumps by device,
// and each entry becomes one short line of text that Node splits.
//
// Encoding (fields separated by one space, entries by "\n", "-" = none):
//   routes: <index into routeDevs> <dst> <gateway> <o if onlink, else -> <metric> <protocol> <nexthop id|->
//   nexthops: <index into routeDevs> <id> <gateway> <o|-> <protocol>
//   neighs: <ip> <mac> <state>
//   fdb:    <mac> <remote VTEP> <state>

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

type stateReq struct {
	nsReq
	// RouteDevs: devices whose main-table IPv4 routes are wanted (one dump).
	RouteDevs []string `json:"routeDevs"`
	// NeighDev and FdbDev: the device whose IPv4 neighbours / FDB are wanted; "" = skip.
	NeighDev string `json:"neighDev,omitempty"`
	FdbDev   string `json:"fdbDev,omitempty"`
	// Family of the routes and neighbours: "inet" (default) or "inet6".
	Family string `json:"family,omitempty"`
	// Nexthops: also the nexthop objects of the family on RouteDevs.
	Nexthops bool `json:"nexthops,omitempty"`
}

type stateReply struct {
	Routes string `json:"routes"`
	Neighs string `json:"neighs"`
	Fdb    string `json:"fdb"`
	// Nexthops (when asked for); NexthopsUnsupported: the kernel has none.
	Nexthops            string `json:"nexthops"`
	NexthopsUnsupported bool   `json:"nexthopsUnsupported,omitempty"`
	// Missing lists requested devices that do not exist (their tables are empty).
	Missing []string `json:"missing"`
}

var ne = nl.NativeEndian()

func opStateDump(raw []byte) (interface{}, error) {
	var r stateReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	return inNetns(r.Netns, func() (interface{}, error) { return dumpState(r) })
}

// state.dump.start begins the same dump on a goroutine of its own and
// answers at once with an id; state.dump.wait with that id returns the dump
// (waiting for it if need be). The agent starts the dump before it plans
// its leases, so the kernel's dump and the JavaScript planning run at the
// same time on two threads. The dump reads the kernel as it is when the
// goroutine runs: the agent writes nothing between start and wait.
var pendingDumps = struct {
	sync.Mutex
	next uint64
	m    map[uint64]chan dumpResult
}{m: map[uint64]chan dumpResult{}}

type dumpResult struct {
	reply *stateReply
	err   error
}

func opStateDumpStart(raw []byte) (interface{}, error) {
	var r stateReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	ch := make(chan dumpResult, 1)
	go func() {
		// dispatch's recover guards only the caller's goroutine
		defer func() {
			if p := recover(); p != nil {
				ch <- dumpResult{err: fmt.Errorf("panic in state.dump: %v", p)}
			}
		}()
		res, err := inNetns(r.Netns, func() (*stateReply, error) { return dumpState(r) })
		ch <- dumpResult{res, err}
	}()
	pendingDumps.Lock()
	defer pendingDumps.Unlock()
	pendingDumps.next++
	pendingDumps.m[pendingDumps.next] = ch
	return map[string]uint64{"id": pendingDumps.next}, nil
}

func opStateDumpWait(raw []byte) (interface{}, error) {
	var w struct {
		ID uint64 `json:"id"`
	}
	if err := decode(raw, &w); err != nil {
		return nil, err
	}
	pendingDumps.Lock()
	ch, ok := pendingDumps.m[w.ID]
	delete(pendingDumps.m, w.ID)
	pendingDumps.Unlock()
	if !ok {
		return nil, fmt.Errorf("state.dump.wait: no dump %d was started (or it was already read): %w", w.ID, unix.ENOENT)
	}
	res := <-ch
	return res.reply, res.err
}

// dumpState runs in the request's netns (package-level netlink sockets are
// opened in the calling thread's namespace).
func dumpState(r stateReq) (*stateReply, error) {
	out := &stateReply{Missing: []string{}}
	family := unix.AF_INET
	if familyOf(r.Family) == netlink.FAMILY_V6 {
		family = unix.AF_INET6
	}
	find := func(name string) int {
		l, err := netlink.LinkByName(name)
		if err != nil {
			out.Missing = append(out.Missing, name)
			return 0
		}
		return l.Attrs().Index
	}
	devs := map[uint32]int{} // ifindex -> position in RouteDevs
	for i, d := range r.RouteDevs {
		if idx := find(d); idx > 0 {
			devs[uint32(idx)] = i
		}
	}
	var err error
	// A route through a nexthop names its device only in compat mode
	// (net.ipv4.nexthop_compat_mode=1, the default): the nexthop does always.
	nhOif := map[uint32]uint32{}
	if r.Nexthops && len(devs) > 0 {
		nhs, err := dumpNexthops(nil)
		if err != nil && !nexthopUnsupported(err) {
			return nil, err
		}
		out.NexthopsUnsupported = err != nil
		if err == nil {
			// The batches that follow start from this (nexthop.go: nexthopCache).
			cacheDump(r.Netns, nhs)
		}
		buf := make([]byte, 0, len(nhs)*40)
		for _, nh := range nhs {
			pos, ok := devs[nh.Oif]
			if !ok || int(nh.Family) != family {
				continue
			}
			nhOif[nh.ID] = nh.Oif
			buf = strconv.AppendInt(buf, int64(pos), 10)
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, uint64(nh.ID), 10)
			buf = append(buf, ' ')
			if nh.Gw.IsValid() {
				buf = nh.Gw.AppendTo(buf)
			} else {
				buf = append(buf, '-')
			}
			if nh.Onlink {
				buf = append(buf, " o "...)
			} else {
				buf = append(buf, " - "...)
			}
			buf = strconv.AppendUint(buf, uint64(nh.Protocol), 10)
			buf = append(buf, '\n')
		}
		out.Nexthops = string(buf)
	}
	if len(devs) > 0 {
		if out.Routes, err = dumpRoutes(family, devs, nhOif); err != nil {
			return nil, err
		}
	}
	if r.NeighDev != "" {
		if idx := find(r.NeighDev); idx > 0 {
			if out.Neighs, err = dumpNeighs(family, idx); err != nil {
				return nil, err
			}
		}
	}
	if r.FdbDev != "" {
		if idx := find(r.FdbDev); idx > 0 {
			if out.Fdb, err = dumpNeighs(unix.AF_BRIDGE, idx); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// attrs calls fn for each netlink attribute in b (type without flag bits).
func attrs(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(ne.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		fn(ne.Uint16(b[2:4])&nl.NLA_TYPE_MASK, b[unix.SizeofRtAttr:l])
		next := (l + unix.RTA_ALIGNTO - 1) & ^(unix.RTA_ALIGNTO - 1)
		if next > len(b) {
			return
		}
		b = b[next:]
	}
}

func appendIP(buf []byte, ip []byte) []byte {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return append(buf, '-')
	}
	return a.Unmap().AppendTo(buf)
}

func appendMAC(buf []byte, mac []byte) []byte {
	if len(mac) == 0 {
		return append(buf, '-')
	}
	return append(buf, net.HardwareAddr(mac).String()...)
}

// dumpRoutes reads the family's routing tables once and keeps the main
// table's routes leaving through one of devs (multipath routes, which name
// no single device, are never the agent's).
func dumpRoutes(family int, devs map[uint32]int, nhOif map[uint32]uint32) (string, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	msg := nl.NewRtMsg()
	msg.Family = uint8(family)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, len(msgs)*40)
	for _, m := range msgs {
		if len(m) < unix.SizeofRtMsg || int(m[0]) != family {
			continue
		}
		dstLen, table, proto := m[1], uint32(m[4]), m[5]
		flags := ne.Uint32(m[8:12])
		if flags&unix.RTM_F_CLONED != 0 {
			continue
		}
		var dst, gw []byte
		var oif, metric, nhid uint32
		hasOif := false
		attrs(m[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.RTA_DST:
				dst = v
			case unix.RTA_GATEWAY:
				gw = v
			case unix.RTA_OIF:
				if len(v) >= 4 {
					oif, hasOif = ne.Uint32(v), true
				}
			case unix.RTA_PRIORITY:
				if len(v) >= 4 {
					metric = ne.Uint32(v)
				}
			case unix.RTA_TABLE:
				if len(v) >= 4 {
					table = ne.Uint32(v)
				}
			case rtaNhID:
				if len(v) >= 4 {
					nhid = ne.Uint32(v)
				}
			}
		})
		if !hasOif && nhid != 0 {
			oif, hasOif = nhOif[nhid]
		}
		pos, ok := devs[oif]
		if !hasOif || !ok || table != unix.RT_TABLE_MAIN {
			continue
		}
		buf = strconv.AppendInt(buf, int64(pos), 10)
		buf = append(buf, ' ')
		if dst == nil {
			buf = append(buf, "default"...)
		} else {
			buf = appendIP(buf, dst)
			buf = append(buf, '/')
			buf = strconv.AppendUint(buf, uint64(dstLen), 10)
		}
		buf = append(buf, ' ')
		if gw == nil {
			buf = append(buf, '-')
		} else {
			buf = appendIP(buf, gw)
		}
		if flags&unix.RTNH_F_ONLINK != 0 {
			buf = append(buf, " o "...)
		} else {
			buf = append(buf, " - "...)
		}
		buf = strconv.AppendUint(buf, uint64(metric), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(proto), 10)
		if nhid != 0 {
			buf = append(buf, ' ')
			buf = strconv.AppendUint(buf, uint64(nhid), 10)
		} else {
			buf = append(buf, " -"...)
		}
		buf = append(buf, '\n')
	}
	return string(buf), nil
}

// dumpNeighs reads the neighbours (AF_INET, AF_INET6) or the FDB (AF_BRIDGE) of one
// device, filtered by the kernel: NDA_IFINDEX for neighbours, the device as
// ifi_index of an ifinfomsg header for the FDB (`bridge fdb show dev X`).
func dumpNeighs(family int, idx int) (string, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	if family == unix.AF_BRIDGE {
		msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
		msg.Index = int32(idx)
		req.AddData(msg)
	} else {
		req.AddData(&netlink.Ndmsg{Family: uint8(family)})
		req.AddData(nl.NewRtAttr(unix.NDA_IFINDEX, nl.Uint32Attr(uint32(idx))))
	}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, len(msgs)*40)
	for _, m := range msgs {
		if len(m) < unix.SizeofNdMsg || int(m[0]) != family || ne.Uint32(m[4:8]) != uint32(idx) {
			continue
		}
		state := ne.Uint16(m[8:10])
		var ip, mac []byte
		attrs(m[unix.SizeofNdMsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.NDA_DST:
				ip = v
			case unix.NDA_LLADDR:
				mac = v
			}
		})
		if family == unix.AF_BRIDGE {
			buf = appendMAC(buf, mac)
			buf = append(buf, ' ')
			buf = appendIP(buf, ip)
		} else {
			if ip == nil {
				continue
			}
			buf = appendIP(buf, ip)
			buf = append(buf, ' ')
			buf = appendMAC(buf, mac)
		}
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(state), 10)
		buf = append(buf, '\n')
	}
	return string(buf), nil
}
