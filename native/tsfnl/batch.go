package main

// Batched kernel writes and one-dump state reads for the agent. At cluster
// scale the cost of the single-entry ops is not the kernel but the crossing:
// every op opens a netlink handle (and a throw-away thread to enter the
// netns), resolves the device by name and parses a JSON request. A batch
// pays that once for thousands of entries, which is what `ip -batch` does.

import (
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// batchEntry is one change; Kind picks which of the fields apply.
type batchEntry struct {
	Kind string `json:"kind"`
	Dev  string `json:"dev"`
	// Group ties entries together: once one fails, the later entries of the
	// same group are skipped (ECANCELED), so a peer is never half-programmed
	// in the wrong order (e.g. a route towards a gateway with no ARP entry).
	// 0 = no group.
	Group int `json:"group,omitempty"`
	// routes
	Dst    string `json:"dst,omitempty"`
	Gw     string `json:"gw,omitempty"`
	Onlink bool   `json:"onlink,omitempty"`
	Metric int    `json:"metric,omitempty"`
	// neighbours and FDB (for FDB, Dst is the remote VTEP)
	IP  string `json:"ip,omitempty"`
	MAC string `json:"mac,omitempty"`
}

type batchReq struct {
	nsReq
	Entries []batchEntry `json:"entries"`
}

type batchError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
	Errno string `json:"errno,omitempty"`
	Code  int    `json:"code,omitempty"`
}

type batchReply struct {
	Applied int          `json:"applied"`
	Errors  []batchError `json:"errors"`
}

// linkCache resolves each device name once per batch.
type linkCache struct {
	h     *netlink.Handle
	index map[string]int
	errs  map[string]error
}

func (c *linkCache) lookup(name string) (int, error) {
	if i, ok := c.index[name]; ok {
		return i, nil
	}
	if err, ok := c.errs[name]; ok {
		return 0, err
	}
	l, err := c.h.LinkByName(name)
	if err != nil {
		c.errs[name] = err
		return 0, err
	}
	c.index[name] = l.Attrs().Index
	return c.index[name], nil
}

func opBatchApply(raw []byte) (interface{}, error) {
	var r batchReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	links := &linkCache{h: h, index: map[string]int{}, errs: map[string]error{}}
	out := batchReply{Errors: []batchError{}}
	failed := map[int]bool{}
	for i, e := range r.Entries {
		if e.Group != 0 && failed[e.Group] {
			out.Errors = append(out.Errors, batchError{Index: i, Error: "skipped: an earlier change for the same peer failed", Errno: "ECANCELED", Code: int(syscall.ECANCELED)})
			continue
		}
		if err := applyEntry(h, links, e); err != nil {
			be := errorReply(err)
			out.Errors = append(out.Errors, batchError{Index: i, Error: e.Kind + ": " + be.Error, Errno: be.Errno, Code: be.Code})
			if e.Group != 0 {
				failed[e.Group] = true
			}
			continue
		}
		out.Applied++
	}
	return out, nil
}

func applyEntry(h *netlink.Handle, links *linkCache, e batchEntry) error {
	idx, err := links.lookup(e.Dev)
	if err != nil {
		return err
	}
	switch e.Kind {
	case "route.replace", "route.del":
		rt, err := e.route(idx)
		if err != nil {
			return err
		}
		if e.Kind == "route.replace" {
			return h.RouteReplace(rt)
		}
		return h.RouteDel(rt)
	case "neigh.set", "neigh.del":
		n, err := e.neigh(idx)
		if err != nil {
			return err
		}
		if n.IP, err = parseIP(e.IP); err != nil {
			return err
		}
		n.Family = netlink.FAMILY_V4
		if n.IP.To4() == nil {
			n.Family = netlink.FAMILY_V6
		}
		if e.Kind == "neigh.set" {
			return h.NeighSet(n)
		}
		return h.NeighDel(n)
	case "fdb.append", "fdb.del":
		n, err := e.neigh(idx)
		if err != nil {
			return err
		}
		n.Family = unix.AF_BRIDGE
		n.Flags = netlink.NTF_SELF
		if e.Dst != "" {
			if n.IP, err = parseIP(e.Dst); err != nil {
				return err
			}
		}
		if e.Kind == "fdb.append" {
			return h.NeighAppend(n)
		}
		return h.NeighDel(n)
	}
	return fmt.Errorf("unknown batch entry kind %q: %w", e.Kind, syscall.EINVAL)
}

func (e batchEntry) route(idx int) (*netlink.Route, error) {
	_, dst, err := net.ParseCIDR(e.Dst)
	if err != nil {
		return nil, fmt.Errorf("bad route dst %q: %w", e.Dst, syscall.EINVAL)
	}
	rt := &netlink.Route{Dst: dst, LinkIndex: idx, Priority: e.Metric}
	if e.Gw != "" {
		if rt.Gw, err = parseIP(e.Gw); err != nil {
			return nil, err
		}
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	if e.Onlink {
		rt.Flags |= int(netlink.FLAG_ONLINK)
	}
	return rt, nil
}

func (e batchEntry) neigh(idx int) (*netlink.Neigh, error) {
	n := &netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT}
	if e.MAC != "" {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return nil, fmt.Errorf("bad mac %q: %w", e.MAC, syscall.EINVAL)
		}
		n.HardwareAddr = mac
	}
	return n, nil
}

// ---- one dump per table

type stateReq struct {
	nsReq
	// RouteDevs: devices whose main-table routes are wanted (one dump).
	RouteDevs []string `json:"routeDevs"`
	// NeighDev and FdbDev: the device whose neighbours / FDB are wanted; "" = skip.
	NeighDev string `json:"neighDev,omitempty"`
	FdbDev   string `json:"fdbDev,omitempty"`
	// Family of the routes and neighbours: "inet" (default) or "inet6".
	Family string `json:"family,omitempty"`
}

// stateRoute is routeJSON with the device named, so one dump serves
// several devices.
type stateRoute struct {
	Dev      string `json:"dev"`
	Dst      string `json:"dst"`
	Gw       string `json:"gw,omitempty"`
	Onlink   bool   `json:"onlink,omitempty"`
	Metric   int    `json:"metric,omitempty"`
	Protocol int    `json:"protocol"`
}

type stateNeigh struct {
	IP    string `json:"ip,omitempty"`
	MAC   string `json:"mac"`
	State int    `json:"state"`
}

type stateReply struct {
	Routes []stateRoute `json:"routes"`
	Neighs []stateNeigh `json:"neighs"`
	Fdb    []stateNeigh `json:"fdb"`
	// Missing lists requested devices that do not exist (their tables are empty).
	Missing []string `json:"missing"`
}

// opStateDump reads the agent's three tables with one dump each: routes of
// one family (IPv4 unless Family says inet6) in the main table for the given
// devices, that family's neighbours and the FDB of one device. The reply is trimmed to what a reconcile compares.
func opStateDump(raw []byte) (interface{}, error) {
	var r stateReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	out := stateReply{Routes: []stateRoute{}, Neighs: []stateNeigh{}, Fdb: []stateNeigh{}, Missing: []string{}}
	family := netlink.FAMILY_V4
	if r.Family == "inet6" {
		family = netlink.FAMILY_V6
	}
	names := map[int]string{}
	find := func(name string) int {
		l, err := h.LinkByName(name)
		if err != nil {
			out.Missing = append(out.Missing, name)
			return 0
		}
		return l.Attrs().Index
	}
	for _, d := range r.RouteDevs {
		if i := find(d); i > 0 {
			names[i] = d
		}
	}
	if len(names) > 0 {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, rt := range routes {
			dev, ok := names[rt.LinkIndex]
			if !ok {
				continue
			}
			j := stateRoute{Dev: dev, Dst: "default", Onlink: rt.Flags&int(netlink.FLAG_ONLINK) != 0, Metric: rt.Priority, Protocol: int(rt.Protocol)}
			if rt.Dst != nil {
				j.Dst = rt.Dst.String()
			}
			if rt.Gw != nil {
				j.Gw = rt.Gw.String()
			}
			out.Routes = append(out.Routes, j)
		}
	}
	neighs := func(dev string, family int) ([]stateNeigh, error) {
		res := []stateNeigh{}
		if dev == "" {
			return res, nil
		}
		idx := find(dev)
		if idx == 0 {
			return res, nil
		}
		list, err := h.NeighList(idx, family)
		if err != nil {
			return nil, err
		}
		for _, n := range list {
			if n.LinkIndex != idx {
				continue
			}
			j := stateNeigh{MAC: n.HardwareAddr.String(), State: n.State}
			if n.IP != nil {
				j.IP = n.IP.String()
			}
			res = append(res, j)
		}
		return res, nil
	}
	if out.Neighs, err = neighs(r.NeighDev, family); err != nil {
		return nil, err
	}
	if out.Fdb, err = neighs(r.FdbDev, unix.AF_BRIDGE); err != nil {
		return nil, err
	}
	return out, nil
}
