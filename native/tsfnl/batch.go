package main

// Batched kernel writes and one-dump state reads for the agent. At cluster
// scale the cost of the single-entry ops is not the kernel but the crossing:
// every op opens a netlink handle (and a throw-away thread to enter the
// netns), resolves the device by name and parses a JSON request. A batch
// pays that once for thousands of entries, which is what `ip -batch` does.

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
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
	// Nexthop: route.replace writes `DST nhid I` through our nexthop object
	// for (Gw, Dev, Onlink), found or created (nexthop.go); route.del finds
	// the route by that nexthop. Nhid names one directly (route.del,
	// nexthop.del); nexthop.del without it deletes ours for (Gw, Dev, Onlink).
	Nexthop bool `json:"nexthop,omitempty"`
	Nhid    int  `json:"nhid,omitempty"`
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
	// NexthopsUnsupported: the kernel has no nexthop objects; the batch's
	// nexthop routes were written as plain gateway routes instead.
	NexthopsUnsupported bool `json:"nexthopsUnsupported,omitempty"`
}

// batchCtx is what one batch's entries share.
type batchCtx struct {
	h     *netlink.Handle
	links *linkCache
	nh    *nexthopTable
	netns string
	// pipe carries the entries that can be pipelined (batch_pipe.go); opened
	// on the first one
	pipe    *pipe
	pipeErr error
	out     *batchReply
	failed  map[int]bool
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

// opBatchApply takes its request as text (batch_text.go), not JSON.
func opBatchApply(raw []byte) (interface{}, error) {
	r, err := decodeBatchText(raw)
	if err != nil {
		return nil, err
	}
	h, done, err := r.handle()
	if err != nil {
		return nil, err
	}
	defer done()
	return applyEntries(h, r.Netns, r.Entries), nil
}

// applyEntries applies the entries in order: pipelined where the entry
// allows it (queue), else on its own once the chunk before it is answered.
func applyEntries(h *netlink.Handle, netnsPath string, entries []batchEntry) batchReply {
	links := &linkCache{h: h, index: map[string]int{}, errs: map[string]error{}}
	out := batchReply{Errors: []batchError{}}
	ctx := &batchCtx{h: h, links: links, nh: &nexthopTable{}, netns: netnsPath, out: &out, failed: map[int]bool{}}
	if len(entries) < pipeMinEntries {
		// A lease event's few writes: a pipe's own socket (a thread entering
		// the netns to open it) would cost more than it saves.
		ctx.pipeErr = errSmallBatch
	}
	defer ctx.nh.close()
	// (a closure: the pipe is opened later, by the first entry that uses it)
	defer func() { ctx.pipe.close() }()
	for i, e := range entries {
		// An earlier entry of the group in flight: its answer decides this one.
		if ctx.pipe.holds(e.Group) {
			ctx.pipe.flush()
		}
		if e.Group != 0 && ctx.failed[e.Group] {
			out.Errors = append(out.Errors, batchError{Index: i, Error: "skipped: an earlier change for the same peer failed", Errno: "ECANCELED", Code: int(syscall.ECANCELED)})
			continue
		}
		if ctx.queue(i, e, entries) {
			continue
		}
		if ctx.pipe != nil {
			ctx.pipe.flush()
		}
		ctx.result(i, e, ctx.apply(e))
	}
	if ctx.pipe != nil {
		ctx.pipe.flush()
	}
	// A skipped entry is recorded when it is reached, which can be before an
	// earlier entry's answer arrives: the reply lists them in request order.
	sort.SliceStable(out.Errors, func(a, b int) bool { return out.Errors[a].Index < out.Errors[b].Index })
	out.NexthopsUnsupported = ctx.nh.unsupported
	return out
}

// result records entry i's outcome; a failure fails its group.
func (c *batchCtx) result(i int, e batchEntry, err error) {
	if err == nil {
		c.out.Applied++
		return
	}
	be := errorReply(err)
	c.out.Errors = append(c.out.Errors, batchError{Index: i, Error: e.Kind + ": " + be.Error, Errno: be.Errno, Code: be.Code})
	if e.Group != 0 {
		c.failed[e.Group] = true
	}
}

func (c *batchCtx) apply(e batchEntry) error {
	h := c.h
	idx, err := c.links.lookup(e.Dev)
	if err != nil {
		return err
	}
	switch e.Kind {
	case "route.replace", "route.del":
		if e.Nexthop || e.Nhid > 0 {
			done, err := c.nexthopRoute(e, idx)
			if done || err != nil {
				return err
			}
		}
		rt, err := e.route(idx)
		if err != nil {
			return err
		}
		if e.Kind == "route.replace" {
			return h.RouteReplace(rt)
		}
		return h.RouteDel(rt)
	case "nexthop.del":
		return c.nexthopDel(e, idx)
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

// nexthopRoute writes or deletes a route in its nexthop form; done = false
// leaves the entry to the plain route code (a kernel without nexthops, or a
// delete whose route has no nexthop of ours: then it is a plain one).
func (c *batchCtx) nexthopRoute(e batchEntry, idx int) (bool, error) {
	dst, err := netip.ParsePrefix(e.Dst)
	if err != nil {
		return false, fmt.Errorf("bad route dst %q: %w", e.Dst, syscall.EINVAL)
	}
	if err := c.nh.load(c.netns); err != nil {
		return false, err
	}
	if c.nh.unsupported {
		return e.Nhid > 0 && e.Kind == "route.del", nil
	}
	var gw netip.Addr
	if e.Nhid == 0 {
		if gw, err = netip.ParseAddr(e.Gw); err != nil {
			return false, fmt.Errorf("bad gateway %q: %w", e.Gw, syscall.EINVAL)
		}
		gw = gw.Unmap()
	}
	for retry := true; ; retry = false {
		id := uint32(e.Nhid)
		if e.Kind == "route.del" {
			if id == 0 {
				var ok bool
				if id, ok = c.nh.ours[keyOf(gw, idx, e.Onlink)]; !ok {
					if retry && c.nh.stale() {
						continue
					}
					return false, nil
				}
			}
			err := c.nh.routeDel(dst.Masked(), e.Metric, id)
			// A cached id that is not the route's: read the kernel again.
			if err == syscall.ESRCH && e.Nhid == 0 && retry && c.nh.stale() {
				continue
			}
			return true, err
		}
		if id == 0 {
			if id, err = c.nh.ensure(gw, idx, e.Onlink); err != nil {
				if err == syscall.EOPNOTSUPP || err == syscall.EAFNOSUPPORT {
					c.nh.unsupported = true
					return false, nil
				}
				return false, fmt.Errorf("nexthop via %s dev %s: %w", e.Gw, e.Dev, err)
			}
		}
		err := c.nh.routeReplace(dst.Masked(), e.Metric, id)
		// A cached nexthop deleted behind our back ("Nexthop id does not exist").
		if err == syscall.EINVAL && e.Nhid == 0 && retry && c.nh.stale() {
			continue
		}
		return true, err
	}
}

func (c *batchCtx) nexthopDel(e batchEntry, idx int) error {
	if err := c.nh.load(c.netns); err != nil {
		return err
	}
	if c.nh.unsupported {
		return fmt.Errorf("nexthop objects: %w", syscall.EOPNOTSUPP)
	}
	id := uint32(e.Nhid)
	if id == 0 {
		gw, err := netip.ParseAddr(e.Gw)
		if err != nil {
			return fmt.Errorf("bad gateway %q: %w", e.Gw, syscall.EINVAL)
		}
		var ok bool
		if id, ok = c.nh.ours[keyOf(gw.Unmap(), idx, e.Onlink)]; !ok && c.nh.stale() {
			id, ok = c.nh.ours[keyOf(gw.Unmap(), idx, e.Onlink)]
		}
		if !ok {
			return fmt.Errorf("no tsflannel nexthop via %s dev %s: %w", e.Gw, e.Dev, syscall.ENOENT)
		}
	}
	return c.nh.del(id)
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
