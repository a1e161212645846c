package main

// Nexthop objects (Linux 5.3+) for the agent's per-peer gateway routes.
//
// Why: the kernel's IPv4 fib_info hash leaves the gateway out, so N gateway
// routes on one device that differ only by gateway share one bucket and each
// insertion walks all the others: O(N²), minutes at 50,000 peers (iproute2
// too). A route that names a nexthop object by id (`ip route replace DST nhid
// I`) shares nothing with the others: 20,000 routes took 1.3 s here instead
// of 59.6 s.
//
// vishvananda/netlink 1.1.0 (Debian's) has no nexthop API, so the messages
// are built here with its nl package. Ids are the shim's to allocate: an
// existing nexthop of ours with the same (family, gateway, device, onlink) is
// reused; otherwise the lowest id nobody holds is created with
// NLM_F_CREATE|NLM_F_EXCL, so a nexthop somebody else made is never replaced.
// Ours carry nh_protocol = NexthopProtocol.

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NexthopProtocol marks tsflannel's nexthop objects (nh_protocol, shown by
// `ip nexthop` as "proto 157"). Unassigned in Linux's rtnetlink.h and in
// iproute2's rt_protos; documented in docs/scale.md.
const NexthopProtocol = 157

// rtaNhID is RTA_NH_ID (Linux 5.3), missing from Debian's x/sys.
const rtaNhID = 30

// sizeofNhmsg: struct nhmsg { u8 family, scope, protocol, resvd; u32 flags }.
const sizeofNhmsg = 8

type nhmsg unix.Nhmsg

func (m *nhmsg) Len() int { return sizeofNhmsg }

func (m *nhmsg) Serialize() []byte {
	b := make([]byte, sizeofNhmsg)
	b[0], b[1], b[2], b[3] = m.Family, m.Scope, m.Protocol, m.Resvd
	ne.PutUint32(b[4:8], m.Flags)
	return b
}

// nexthop is one nexthop object as the kernel reports it.
type nexthop struct {
	ID       uint32
	Family   uint8
	Protocol uint8
	Onlink   bool
	Oif      uint32
	Gw       netip.Addr // invalid for a group or blackhole
}

type nhKey struct {
	family uint8
	gw     netip.Addr
	oif    uint32
	onlink bool
}

// nexthopUnsupported tells a kernel without nexthop objects (or with them
// disabled for a family) from a real error.
func nexthopUnsupported(err error) bool {
	return err == syscall.EOPNOTSUPP || err == syscall.EAFNOSUPPORT || err == syscall.EINVAL || err == syscall.EPROTONOSUPPORT
}

// dumpNexthops reads every nexthop object of the calling thread's netns
// (or of sock's, when given).
func dumpNexthops(sock *nl.SocketHandle) ([]nexthop, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	if sock != nil {
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	}
	req.AddData(&nhmsg{Family: unix.AF_UNSPEC})
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		return nil, err
	}
	out := make([]nexthop, 0, len(msgs))
	for _, m := range msgs {
		if nh, ok := parseNexthop(m); ok {
			out = append(out, nh)
		}
	}
	return out, nil
}

// getNexthop reads one nexthop object by id (ENOENT when there is none).
func getNexthop(sock *nl.SocketHandle, id uint32) (nexthop, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, 0)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	req.AddData(&nhmsg{Family: unix.AF_UNSPEC})
	req.AddData(nl.NewRtAttr(unix.NHA_ID, nl.Uint32Attr(id)))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		return nexthop{}, err
	}
	for _, m := range msgs {
		if nh, ok := parseNexthop(m); ok && nh.ID == id {
			return nh, nil
		}
	}
	return nexthop{}, fmt.Errorf("nexthop %d: %w", id, syscall.ENOENT)
}

func parseNexthop(m []byte) (nexthop, bool) {
	{
		if len(m) < sizeofNhmsg {
			return nexthop{}, false
		}
		nh := nexthop{Family: m[0], Protocol: m[2], Onlink: ne.Uint32(m[4:8])&unix.RTNH_F_ONLINK != 0}
		attrs(m[sizeofNhmsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.NHA_ID:
				if len(v) >= 4 {
					nh.ID = ne.Uint32(v)
				}
			case unix.NHA_OIF:
				if len(v) >= 4 {
					nh.Oif = ne.Uint32(v)
				}
			case unix.NHA_GATEWAY:
				if a, ok := netip.AddrFromSlice(v); ok {
					nh.Gw = a.Unmap()
				}
			}
		})
		return nh, nh.ID != 0
	}
}

// nexthopState is what the shim knows of one netns's nexthops.
type nexthopState struct {
	ours map[nhKey]uint32 // lowest id of ours per key
	byID map[uint32]nexthop
	next uint32 // ids below are known taken
}

func newNexthopState(nhs []nexthop) *nexthopState {
	st := &nexthopState{ours: map[nhKey]uint32{}, byID: make(map[uint32]nexthop, len(nhs)), next: 1}
	for _, nh := range nhs {
		st.add(nh)
	}
	return st
}

// nexthopCache keeps each netns's nexthopState between calls (the agent
// calls the shim for years from one process), so that a lease event's batch
// finds its nexthop without dumping 50,000 of them: a state dump asking for
// nexthops refreshes it, the batches keep it up to date, and every entry
// read from it is checked against the kernel before use (a route replace
// naming a vanished id fails and reloads; a delete reads the id back first).
// Keyed by the namespace's inode, so a netns recreated at the same path is
// another one.
var nexthopCache = struct {
	sync.Mutex
	m map[nsID]*cachedState
}{m: map[nsID]*cachedState{}}

// cachedState: a state dump hands its list to a goroutine that builds the
// maps (60 ms at 50,000 nexthops on a loaded machine) while Node goes on
// with the exact pass, so the next lease event does not pay for it; a batch
// arriving before it is done waits for it.
type cachedState struct {
	done  chan struct{}
	state *nexthopState
	// raw: the dump the state was built from; used: a batch took the state
	// (and may have changed it). A later dump equal to raw, with no batch in
	// between, keeps the state: a no-op resync rebuilds nothing.
	raw  []nexthop
	used bool
}

func sameNexthops(a, b []nexthop) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// cacheDump caches a state dump's nexthops, unless they are what the cache
// already holds.
func cacheDump(path string, nhs []nexthop) {
	id, ok := netnsID(path)
	if !ok {
		return
	}
	nexthopCache.Lock()
	c := nexthopCache.m[id]
	keep := c != nil && !c.used && c.raw != nil && sameNexthops(c.raw, nhs)
	if !keep {
		nexthopCache.m[id] = buildInBackground(nhs)
	}
	nexthopCache.Unlock()
}

func buildInBackground(nhs []nexthop) *cachedState {
	c := &cachedState{done: make(chan struct{}), raw: nhs}
	go func() {
		defer close(c.done)
		c.state = newNexthopState(nhs)
	}()
	return c
}

func builtState(st *nexthopState) *cachedState {
	c := &cachedState{done: make(chan struct{}), state: st}
	close(c.done)
	return c
}

type nsID struct{ dev, ino uint64 }

func netnsID(path string) (nsID, bool) {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(st.Dev), st.Ino}, true
}

func cacheNexthops(path string, c *cachedState) {
	id, ok := netnsID(path)
	if !ok {
		return
	}
	nexthopCache.Lock()
	defer nexthopCache.Unlock()
	nexthopCache.m[id] = c
}

func cachedNexthops(path string) *nexthopState {
	id, ok := netnsID(path)
	if !ok {
		return nil
	}
	nexthopCache.Lock()
	c := nexthopCache.m[id]
	if c != nil {
		c.used = true
	}
	nexthopCache.Unlock()
	if c == nil {
		return nil
	}
	<-c.done
	return c.state
}

// nexthopTable is one batch's view of the netns's nexthops, read on the
// first entry that needs it and kept up to date by the batch's own writes.
type nexthopTable struct {
	sock        *nl.SocketHandle
	netns       string
	loaded      bool
	unsupported bool
	// cached: the state came from nexthopCache, not from a dump of this batch
	cached bool
	*nexthopState
}

// openRouteSocket opens a NETLINK_ROUTE socket in the netns at path ("" =
// the process's own) on a throw-away thread, as every netns entry is.
func openRouteSocket(path string) (*nl.SocketHandle, error) {
	s, err := inNetns(path, func() (*nl.NetlinkSocket, error) {
		return nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	})
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := s.SetSendTimeout(&tv); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return nil, err
	}
	return &nl.SocketHandle{Socket: s}, nil
}

func (t *nexthopTable) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: t.sock}
	return req
}

// load reads the netns's nexthops once; a kernel without them marks the
// table unsupported (not an error: the caller falls back to plain routes).
func (t *nexthopTable) load(netnsPath string) error {
	if t.loaded || t.unsupported {
		return nil
	}
	t.netns = netnsPath
	if t.sock == nil {
		s, err := openRouteSocket(netnsPath)
		if err != nil {
			return err
		}
		t.sock = s
	}
	if st := cachedNexthops(netnsPath); st != nil {
		t.nexthopState, t.loaded, t.cached = st, true, true
		return nil
	}
	return t.reload()
}

// reload reads the netns's nexthops again and caches them.
func (t *nexthopTable) reload() error {
	nhs, err := dumpNexthops(t.sock)
	if err != nil {
		if nexthopUnsupported(err) {
			t.unsupported = true
			return nil
		}
		return fmt.Errorf("dump nexthops: %w", err)
	}
	t.nexthopState, t.loaded, t.cached = newNexthopState(nhs), true, false
	cacheNexthops(t.netns, builtState(t.nexthopState))
	return nil
}

// stale: an answer from the cache turned out wrong; read the kernel again
// (once per batch) and tell the caller whether to retry.
func (t *nexthopTable) stale() bool {
	if !t.cached {
		return false
	}
	return t.reload() == nil && !t.unsupported
}

func (t *nexthopTable) close() {
	if t.sock != nil {
		t.sock.Socket.Close()
	}
}

func (t *nexthopState) add(nh nexthop) {
	t.byID[nh.ID] = nh
	if nh.Protocol != NexthopProtocol || !nh.Gw.IsValid() {
		return
	}
	k := nhKey{nh.Family, nh.Gw, nh.Oif, nh.Onlink}
	if id, ok := t.ours[k]; !ok || nh.ID < id {
		t.ours[k] = nh.ID
	}
}

func (t *nexthopState) forget(id uint32) {
	nh, ok := t.byID[id]
	if !ok {
		return
	}
	delete(t.byID, id)
	k := nhKey{nh.Family, nh.Gw, nh.Oif, nh.Onlink}
	if t.ours[k] != id {
		return
	}
	delete(t.ours, k)
	for _, o := range t.byID { // another of ours with the same key, if any
		if o.Protocol == NexthopProtocol && o.Gw.IsValid() && (nhKey{o.Family, o.Gw, o.Oif, o.Onlink}) == k {
			if cur, ok := t.ours[k]; !ok || o.ID < cur {
				t.ours[k] = o.ID
			}
		}
	}
}

func keyOf(gw netip.Addr, oif int, onlink bool) nhKey {
	fam := uint8(unix.AF_INET6)
	if gw.Is4() {
		fam = unix.AF_INET
	}
	return nhKey{fam, gw, uint32(oif), onlink}
}

// ensure returns the id of our nexthop for (gw, oif, onlink), creating it
// when there is none.
func (t *nexthopTable) ensure(gw netip.Addr, oif int, onlink bool) (uint32, error) {
	k := keyOf(gw, oif, onlink)
	if id, ok := t.ours[k]; ok {
		return id, nil
	}
	for tries := 0; tries < 64; tries++ {
		for t.byID[t.next].ID != 0 {
			t.next++
		}
		id := t.next
		err := t.create(id, k)
		if err == nil {
			t.add(nexthop{ID: id, Family: k.family, Protocol: NexthopProtocol, Onlink: onlink, Oif: k.oif, Gw: gw})
			return id, nil
		}
		if err != syscall.EEXIST {
			return 0, err
		}
		// Taken since our dump (somebody else's): never replaced, skipped.
		t.byID[id] = nexthop{ID: id}
	}
	return 0, fmt.Errorf("no free nexthop id after 64 tries: %w", syscall.EEXIST)
}

func (t *nexthopTable) create(id uint32, k nhKey) error {
	req := t.request(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	m := &nhmsg{Family: k.family, Protocol: NexthopProtocol}
	if k.onlink {
		m.Flags = unix.RTNH_F_ONLINK
	}
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.NHA_ID, nl.Uint32Attr(id)))
	req.AddData(nl.NewRtAttr(unix.NHA_OIF, nl.Uint32Attr(k.oif)))
	req.AddData(nl.NewRtAttr(unix.NHA_GATEWAY, k.gw.AsSlice()))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// del removes one of our nexthops (with every route still using it).
func (t *nexthopTable) del(id uint32) error {
	nh, ok := t.byID[id]
	if t.cached {
		// The cache may be behind the kernel: read the id back.
		got, err := getNexthop(t.sock, id)
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		if err != nil {
			t.forget(id)
			return fmt.Errorf("nexthop %d: %w", id, syscall.ENOENT)
		}
		if !ok || got != nh {
			t.forget(id)
			t.add(got)
		}
		nh, ok = got, true
	}
	if !ok {
		return fmt.Errorf("nexthop %d: %w", id, syscall.ENOENT)
	}
	if nh.Protocol != NexthopProtocol {
		return fmt.Errorf("nexthop %d is not tsflannel's (protocol %d): %w", id, nh.Protocol, syscall.EPERM)
	}
	req := t.request(unix.RTM_DELNEXTHOP, unix.NLM_F_ACK)
	req.AddData(&nhmsg{Family: unix.AF_UNSPEC})
	req.AddData(nl.NewRtAttr(unix.NHA_ID, nl.Uint32Attr(id)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err == nil || err == syscall.ENOENT {
		t.forget(id)
	}
	return err
}

// routeMsg is a main-table unicast route to dst through nexthop id.
func (t *nexthopTable) routeMsg(typ, flags int, dst netip.Prefix, metric int, id uint32) *nl.NetlinkRequest {
	req := t.request(typ, flags)
	m := nl.NewRtMsg()
	m.Family = unix.AF_INET6
	if dst.Addr().Is4() {
		m.Family = unix.AF_INET
	}
	m.Dst_len = uint8(dst.Bits())
	m.Table = unix.RT_TABLE_MAIN
	m.Type = unix.RTN_UNICAST
	if typ == unix.RTM_DELROUTE {
		m.Scope = unix.RT_SCOPE_NOWHERE
		m.Protocol = 0
	}
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst.Addr().AsSlice()))
	if metric > 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_PRIORITY, nl.Uint32Attr(uint32(metric))))
	}
	req.AddData(nl.NewRtAttr(rtaNhID, nl.Uint32Attr(id)))
	return req
}

func (t *nexthopTable) routeReplace(dst netip.Prefix, metric int, id uint32) error {
	_, err := t.routeMsg(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK, dst, metric, id).Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func (t *nexthopTable) routeDel(dst netip.Prefix, metric int, id uint32) error {
	_, err := t.routeMsg(unix.RTM_DELROUTE, unix.NLM_F_ACK, dst, metric, id).Execute(unix.NETLINK_ROUTE, 0)
	return err
}

type nexthopFlushReq struct {
	nsReq
}

// opNexthopFlush deletes every nexthop of tsflannel's protocol in the netns
// (and with them the routes through them): `tsflanneld --cleanup` on
// uninstall. Nexthops of other protocols stay.
func opNexthopFlush(raw []byte) (interface{}, error) {
	var r nexthopFlushReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	sock, err := openRouteSocket(r.Netns)
	if err != nil {
		return nil, err
	}
	t := &nexthopTable{sock: sock, netns: r.Netns}
	defer t.close()
	if err := t.reload(); err != nil { // the kernel's, never the cache's
		return nil, err
	}
	if t.unsupported {
		return map[string]int{"deleted": 0}, nil
	}
	deleted := 0
	ids := []uint32{}
	for id, nh := range t.byID {
		if nh.Protocol == NexthopProtocol {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		err := t.del(id)
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("delete nexthop %d: %w", id, err)
		}
		if err == nil {
			deleted++
		}
	}
	return map[string]int{"deleted": deleted}, nil
}
