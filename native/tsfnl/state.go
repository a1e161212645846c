package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func familyOf(s string) int {
	switch s {
	case "inet", "4":
		return netlink.FAMILY_V4
	case "inet6", "6":
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_ALL
}

func parseCIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("bad cidr %q: %w", s, syscall.EINVAL)
	}
	n.IP = ip // keep the host part: 10.244.1.5/24 is an address, not a network
	return n, nil
}

func parseIP(s string) (net.IP, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("bad ip %q: %w", s, syscall.EINVAL)
	}
	return ip, nil
}

// ---- addresses

type addrReq struct {
	nsReq
	Dev  string `json:"dev"`
	CIDR string `json:"cidr"`
}

type addrJSON struct {
	CIDR      string `json:"cidr"`
	LinkIndex int    `json:"linkIndex"`
	Scope     int    `json:"scope"`
}

func opAddrChange(kind string) opFunc {
	return func(raw []byte) (interface{}, error) {
		var r addrReq
		if err := decode(raw, &r); err != nil {
			return nil, err
		}
		n, err := parseCIDR(r.CIDR)
		if err != nil {
			return nil, err
		}
		h, done, err := r.handle()
		if err != nil {
			return nil, err
		}
		defer done()
		l, err := h.LinkByName(r.Dev)
		if err != nil {
			return nil, err
		}
		a := &netlink.Addr{IPNet: n}
		switch kind {
		case "add":
			return nil, h.AddrAdd(l, a)
		case "replace":
			return nil, h.AddrReplace(l, a)
		default:
			return nil, h.AddrDel(l, a)
		}
	}
}

type listReq struct {
	nsReq
	Dev    string `json:"dev,omitempty"`
	Family string `json:"family,omitempty"`
}

// link resolves the optional device filter; nil means every link.
func (r listReq) link(h *netlink.Handle) (netlink.Link, error) {
	if r.Dev == "" {
		return nil, nil
	}
	return h.LinkByName(r.Dev)
}

func opAddrList(raw []byte) (interface{}, error) {
	var r listReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := r.link(h)
	if err != nil {
		return nil, err
	}
	addrs, err := h.AddrList(l, familyOf(r.Family))
	if err != nil {
		return nil, err
	}
	out := make([]addrJSON, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, addrJSON{CIDR: a.IPNet.String(), LinkIndex: a.LinkIndex, Scope: a.Scope})
	}
	return out, nil
}

// ---- routes

type routeReq struct {
	nsReq
	Dst      string `json:"dst,omitempty"`
	Gw       string `json:"gw,omitempty"`
	Dev      string `json:"dev,omitempty"`
	Src      string `json:"src,omitempty"`
	Onlink   bool   `json:"onlink,omitempty"`
	Scope    *int   `json:"scope,omitempty"`
	Table    int    `json:"table,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
	Metric   int    `json:"metric,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
}

type routeJSON struct {
	Dst       string `json:"dst"`
	Gw        string `json:"gw,omitempty"`
	Src       string `json:"src,omitempty"`
	LinkIndex int    `json:"linkIndex"`
	Onlink    bool   `json:"onlink"`
	Scope     int    `json:"scope"`
	Table     int    `json:"table"`
	Protocol  int    `json:"protocol"`
	Metric    int    `json:"metric"`
}

func (r routeReq) build(h *netlink.Handle) (*netlink.Route, error) {
	rt := &netlink.Route{Table: r.Table, Protocol: netlink.RouteProtocol(r.Protocol), Priority: r.Metric, MTU: r.MTU}
	if r.Dst != "" {
		_, n, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, fmt.Errorf("bad route dst %q: %w", r.Dst, syscall.EINVAL)
		}
		rt.Dst = n
	}
	var err error
	if r.Gw != "" {
		if rt.Gw, err = parseIP(r.Gw); err != nil {
			return nil, err
		}
	}
	if r.Src != "" {
		if rt.Src, err = parseIP(r.Src); err != nil {
			return nil, err
		}
	}
	if r.Dev != "" {
		l, err := h.LinkByName(r.Dev)
		if err != nil {
			return nil, err
		}
		rt.LinkIndex = l.Attrs().Index
	}
	if r.Onlink {
		rt.Flags |= int(netlink.FLAG_ONLINK)
	}
	if r.Scope != nil {
		rt.Scope = netlink.Scope(*r.Scope)
	} else if rt.Gw == nil && rt.LinkIndex > 0 {
		rt.Scope = netlink.SCOPE_LINK // a direct route, as `ip route add X dev Y` makes
	}
	return rt, nil
}

func opRouteChange(kind string) opFunc {
	return func(raw []byte) (interface{}, error) {
		var r routeReq
		h, done, err := openReq(raw, &r)
		if err != nil {
			return nil, err
		}
		defer done()
		rt, err := r.build(h)
		if err != nil {
			return nil, err
		}
		switch kind {
		case "add":
			return nil, h.RouteAdd(rt)
		case "replace":
			return nil, h.RouteReplace(rt)
		default:
			return nil, h.RouteDel(rt)
		}
	}
}

type routeListReq struct {
	listReq
	Table int `json:"table,omitempty"`
}

func opRouteList(raw []byte) (interface{}, error) {
	var r routeListReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := r.link(h)
	if err != nil {
		return nil, err
	}
	filter := &netlink.Route{Table: r.Table}
	mask := netlink.RT_FILTER_TABLE
	switch {
	case r.Table == 0:
		filter.Table = unix.RT_TABLE_MAIN
	case r.Table < 0:
		// Every table: the table filter with RT_TABLE_UNSPEC keeps them all
		// (without the filter the library drops all but main).
		filter.Table = unix.RT_TABLE_UNSPEC
	}
	if l != nil {
		filter.LinkIndex = l.Attrs().Index
		mask |= netlink.RT_FILTER_OIF
	}
	routes, err := h.RouteListFiltered(familyOf(r.Family), filter, mask)
	if err != nil {
		return nil, err
	}
	out := make([]routeJSON, 0, len(routes))
	for _, rt := range routes {
		j := routeJSON{
			Dst: "default", LinkIndex: rt.LinkIndex, Onlink: rt.Flags&int(netlink.FLAG_ONLINK) != 0,
			Scope: int(rt.Scope), Table: rt.Table, Protocol: int(rt.Protocol), Metric: rt.Priority,
		}
		if rt.Dst != nil {
			j.Dst = rt.Dst.String()
		}
		if rt.Gw != nil {
			j.Gw = rt.Gw.String()
		}
		if rt.Src != nil {
			j.Src = rt.Src.String()
		}
		out = append(out, j)
	}
	return out, nil
}

// ---- neighbours (ARP) and bridge FDB

type neighReq struct {
	nsReq
	Dev string `json:"dev"`
	IP  string `json:"ip,omitempty"`
	MAC string `json:"mac,omitempty"`
	Dst string `json:"dst,omitempty"` // fdb: the remote VTEP
}

type neighJSON struct {
	IP        string `json:"ip,omitempty"`
	MAC       string `json:"mac"`
	LinkIndex int    `json:"linkIndex"`
	State     int    `json:"state"`
	Flags     int    `json:"flags"`
}

func (r neighReq) base(h *netlink.Handle) (*netlink.Neigh, error) {
	l, err := h.LinkByName(r.Dev)
	if err != nil {
		return nil, err
	}
	n := &netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT}
	if r.MAC != "" {
		if n.HardwareAddr, err = net.ParseMAC(r.MAC); err != nil {
			return nil, fmt.Errorf("bad mac %q: %w", r.MAC, syscall.EINVAL)
		}
	}
	return n, nil
}

func withNeigh(raw []byte, fn func(h *netlink.Handle, r neighReq, n *netlink.Neigh) error) (interface{}, error) {
	var r neighReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	n, err := r.base(h)
	if err != nil {
		return nil, err
	}
	return nil, fn(h, r, n)
}

func opNeighChange(kind string) opFunc {
	return func(raw []byte) (interface{}, error) {
		return withNeigh(raw, func(h *netlink.Handle, r neighReq, n *netlink.Neigh) (err error) {
			if n.IP, err = parseIP(r.IP); err != nil {
				return err
			}
			n.Family = netlink.FAMILY_V4
			if n.IP.To4() == nil {
				n.Family = netlink.FAMILY_V6
			}
			if kind == "set" {
				return h.NeighSet(n)
			}
			return h.NeighDel(n)
		})
	}
}

func opFdbChange(kind string) opFunc {
	return func(raw []byte) (interface{}, error) {
		return withNeigh(raw, func(h *netlink.Handle, r neighReq, n *netlink.Neigh) (err error) {
			n.Family = unix.AF_BRIDGE
			n.Flags = netlink.NTF_SELF
			if r.Dst != "" {
				if n.IP, err = parseIP(r.Dst); err != nil {
					return err
				}
			}
			if kind == "append" {
				return h.NeighAppend(n)
			}
			return h.NeighDel(n)
		})
	}
}

func listNeigh(raw []byte, family int) (interface{}, error) {
	var r listReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	idx := 0
	if l, err := r.link(h); err != nil {
		return nil, err
	} else if l != nil {
		idx = l.Attrs().Index
	}
	if family == netlink.FAMILY_ALL {
		family = familyOf(r.Family)
	}
	ns, err := h.NeighList(idx, family)
	if err != nil {
		return nil, err
	}
	out := make([]neighJSON, 0, len(ns))
	for _, n := range ns {
		j := neighJSON{MAC: n.HardwareAddr.String(), LinkIndex: n.LinkIndex, State: n.State, Flags: n.Flags}
		if n.IP != nil {
			j.IP = n.IP.String()
		}
		out = append(out, j)
	}
	return out, nil
}

func opNeighList(raw []byte) (interface{}, error) { return listNeigh(raw, netlink.FAMILY_ALL) }
func opFdbList(raw []byte) (interface{}, error)   { return listNeigh(raw, unix.AF_BRIDGE) }

// ---- sysctl, namespace checks and file locks

type sysctlReq struct {
	nsReq
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// path maps a key to /proc/sys like sysctl(8): dots separate levels, unless
// the key already uses slashes, which keeps dotted interface names intact
// (net/ipv4/conf/flannel.1/rp_filter).
func (r sysctlReq) path() (string, error) {
	k := r.Key
	if !strings.Contains(k, "/") {
		k = strings.ReplaceAll(k, ".", "/")
	}
	if k == "" || strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
		return "", fmt.Errorf("bad sysctl key %q: %w", r.Key, syscall.EINVAL)
	}
	return "/proc/sys/" + k, nil
}

func opSysctlGet(raw []byte) (interface{}, error) {
	var r sysctlReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	p, err := r.path()
	if err != nil {
		return nil, err
	}
	return inNetns(r.Netns, func() (interface{}, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return strings.TrimSpace(string(b)), nil
	})
}

func opSysctlSet(raw []byte) (interface{}, error) {
	var r sysctlReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	p, err := r.path()
	if err != nil {
		return nil, err
	}
	return inNetns(r.Netns, func() (interface{}, error) {
		return nil, os.WriteFile(p, []byte(r.Value), 0o644)
	})
}

type netnsCheckReq struct {
	Path string `json:"path"`
}

// opNetnsCheck tells whether a path is a network namespace (an nsfs inode
// of type net), so a CNI_NETNS pointing at an ordinary file is rejected
// before anything is created.
func opNetnsCheck(raw []byte) (interface{}, error) {
	var r netnsCheckReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	fd, err := unix.Open(r.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return nil, err
	}
	const nsfsMagic = 0x6e736673
	if st.Type != nsfsMagic {
		return map[string]bool{"netns": false}, nil
	}
	const nsGetNstype = 0xb703 // NS_GET_NSTYPE
	t, err := unix.IoctlRetInt(fd, nsGetNstype)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"netns": t == unix.CLONE_NEWNET}, nil
}

type flockReq struct {
	Fd       int    `json:"fd"`
	Op       string `json:"op"` // "ex", "sh" or "un"
	NonBlock bool   `json:"nonblock,omitempty"`
	// TimeoutMs > 0 waits in flock(2) itself, queued by the kernel like the
	// reference host-local's waiters, but gives up with EAGAIN after it.
	TimeoutMs int `json:"timeoutMs,omitempty"`
}

// opFlock takes a real flock(2) on a descriptor Node opened, which is the
// lock the reference host-local plugin takes on <dataDir>/<net>/lock.
func opFlock(raw []byte) (interface{}, error) {
	var r flockReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	how := map[string]int{"ex": unix.LOCK_EX, "sh": unix.LOCK_SH, "un": unix.LOCK_UN}[r.Op]
	if how == 0 {
		return nil, fmt.Errorf("bad flock op %q: %w", r.Op, syscall.EINVAL)
	}
	if r.NonBlock {
		how |= unix.LOCK_NB
	} else if r.TimeoutMs > 0 && how != unix.LOCK_UN {
		return nil, flockWithin(r.Fd, how, time.Duration(r.TimeoutMs)*time.Millisecond)
	}
	return nil, flockRetry(r.Fd, how)
}

func flockRetry(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}

type peerCredReq struct {
	Fd int `json:"fd"`
}

// opPeerCred reads SO_PEERCRED of a connected Unix socket Node accepted:
// Node has no API for it, and the agent's CNI socket must serve root only.
// The credentials are those the peer had when it connected, so a client
// cannot drop or gain privileges afterwards to fool the check.
func opPeerCred(raw []byte) (interface{}, error) {
	var r peerCredReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	if r.Fd < 0 {
		return nil, fmt.Errorf("bad fd %d: %w", r.Fd, syscall.EBADF)
	}
	cred, err := syscall.GetsockoptUcred(r.Fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return nil, err
	}
	return map[string]int{"pid": int(cred.Pid), "uid": int(cred.Uid), "gid": int(cred.Gid)}, nil
}

// flockWithin blocks in flock(2) on a duplicate of fd, on its own goroutine,
// for at most d. A lock taken through the duplicate belongs to the open file
// description, so it stays held by fd once the duplicate is closed. A waiter
// abandoned at the timeout owns its duplicate: should it get the lock later,
// it lets go at once and closes it, so a descriptor number Node has reused
// in the meantime is never touched.
func flockWithin(fd, how int, d time.Duration) error {
	// Free (the common case): taken at once, without the helper goroutine,
	// duplicate descriptor and timer. Held: wait in the kernel's queue below.
	if err := flockRetry(fd, how|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		return err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	abandoned := false
	done := make(chan error, 1)
	go func() {
		err := flockRetry(dup, how)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if err == nil {
				_ = unix.Flock(dup, unix.LOCK_UN)
			}
			_ = unix.Close(dup)
			return
		}
		done <- err
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		_ = unix.Close(dup)
		return err
	case <-timer.C:
		mu.Lock()
		select {
		case err := <-done:
			// Got it just as the time ran out: keep it.
			mu.Unlock()
			_ = unix.Close(dup)
			return err
		default:
		}
		abandoned = true
		mu.Unlock()
		return fmt.Errorf("lock still held by another process after %v: %w", d, syscall.EAGAIN)
	}
}
