package main

// Pipelined kernel writes for batch.apply. vishvananda's Execute pays, per
// entry, one sendto, a getsockname and a recvfrom into a freshly zeroed
// 64 KiB buffer: at 5,000 peers (20,000 messages) that was more CPU than the
// kernel's own work. Here up to pipeChunk requests go to the kernel in one
// sendto, built into one reused buffer.
//
// Every write stays checked. rtnetlink handles the messages of one sendto
// one after another, synchronously inside the call, and answers each failed
// one with an error carrying its sequence number (which names the entry);
// the chunk's last message asks for an ACK, so once it is read every answer
// of the chunk has been. NETLINK_CAP_ACK keeps error answers small and the
// receive buffer is raised, so that a chunk's answers always fit; if answers
// were lost anyway (ENOBUFS), every entry without one is reported failed.
// A failure does not stop the kernel from handling the next message, as a
// failing entry never stopped the batch; entries of one group are never in
// the same chunk (the caller flushes first), so a group still stands or falls
// together.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

const (
	// pipeChunk bounds the requests (and so the answers) of one sendto.
	pipeChunk = 256
	// pipeRcvBuf: the receive buffer asked for (SO_RCVBUFFORCE as root),
	// far above pipeChunk error answers.
	pipeRcvBuf = 4 << 20
	// pipeMinEntries: smaller batches are written one entry at a time
	pipeMinEntries = 16
	sizeofNdmsg    = 12
	sizeofRtmsg    = 12
)

var errSmallBatch = errors.New("batch too small to pipeline")

// pending is one request of the chunk in flight.
type pending struct {
	seq uint32
	// done receives the kernel's answer (nil = accepted).
	done func(err error)
	// answered: an answer naming seq was read (an error, or the last one's ACK)
	answered bool
}

// pipe is one NETLINK_ROUTE socket in the batch's netns and its chunk.
type pipe struct {
	sock     *nl.SocketHandle
	fd       int
	seq      uint32
	buf      []byte
	rbuf     []byte
	inFlight []pending
	// groups with a request in the chunk
	groups map[int]bool
	// lastHdr: offset of the chunk's last message header (it gets NLM_F_ACK)
	lastHdr int
}

func openPipe(netnsPath string) (*pipe, error) {
	sock, err := openRouteSocket(netnsPath)
	if err != nil {
		return nil, err
	}
	fd := sock.Socket.GetFd()
	// Both best effort: without them a chunk's answers still fit the default
	// buffer (256 small error answers), and a loss is still detected.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, pipeRcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, pipeRcvBuf)
	}
	return &pipe{sock: sock, fd: fd, buf: make([]byte, 0, 64<<10), rbuf: make([]byte, 64<<10), groups: map[int]bool{}}, nil
}

func (p *pipe) close() {
	if p != nil && p.sock != nil {
		p.sock.Socket.Close()
	}
}

func (p *pipe) full() bool { return len(p.inFlight) >= pipeChunk }

func (p *pipe) holds(group int) bool { return p != nil && group != 0 && p.groups[group] }

// msg starts a request; attrs follow with attr, and end closes it.
func (p *pipe) msg(typ, flags uint16, body []byte) int {
	off := len(p.buf)
	p.seq++
	var h [unix.SizeofNlMsghdr]byte
	ne.PutUint16(h[4:6], typ)
	ne.PutUint16(h[6:8], unix.NLM_F_REQUEST|flags)
	ne.PutUint32(h[8:12], p.seq)
	p.buf = append(p.buf, h[:]...)
	p.buf = append(p.buf, body...)
	return off
}

func (p *pipe) attr(typ uint16, data []byte) {
	var h [unix.SizeofRtAttr]byte
	ne.PutUint16(h[0:2], uint16(unix.SizeofRtAttr+len(data)))
	ne.PutUint16(h[2:4], typ)
	p.buf = append(p.buf, h[:]...)
	p.buf = append(p.buf, data...)
	for len(p.buf)%unix.RTA_ALIGNTO != 0 {
		p.buf = append(p.buf, 0)
	}
}

func (p *pipe) attrU32(typ uint16, v uint32) {
	var b [4]byte
	ne.PutUint32(b[:], v)
	p.attr(typ, b[:])
}

// end closes the request started at off; done gets the kernel's answer.
func (p *pipe) end(off int, group int, done func(error)) {
	ne.PutUint32(p.buf[off:off+4], uint32(len(p.buf)-off))
	p.lastHdr = off
	p.inFlight = append(p.inFlight, pending{seq: p.seq, done: done})
	if group != 0 {
		p.groups[group] = true
	}
}

// flush sends the chunk, reads every answer and hands each request its
// result, in request order.
func (p *pipe) flush() {
	if len(p.inFlight) == 0 {
		return
	}
	reqs := p.inFlight
	results := make([]error, len(reqs))
	first := reqs[0].seq
	flags := ne.Uint16(p.buf[p.lastHdr+6 : p.lastHdr+8])
	ne.PutUint16(p.buf[p.lastHdr+6:p.lastHdr+8], flags|unix.NLM_F_ACK)
	err := unix.Sendto(p.fd, p.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	if err != nil {
		for i := range results {
			results[i] = fmt.Errorf("sending to the kernel: %w", err)
		}
	} else {
		p.collect(reqs, results, first)
	}
	p.buf = p.buf[:0]
	p.inFlight = p.inFlight[:0]
	for g := range p.groups {
		delete(p.groups, g)
	}
	for i := range reqs {
		reqs[i].done(results[i])
	}
}

// collect reads the answers of the chunk just sent. The kernel handled it
// inside sendto, so every answer is queued already: reading without
// blocking until the last request's ACK loses nothing, and running dry
// before it means answers were dropped.
func (p *pipe) collect(reqs []pending, results []error, first uint32) {
	var lost error
	for {
		n, _, err := unix.Recvfrom(p.fd, p.rbuf, unix.MSG_DONTWAIT)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.ENOBUFS {
			lost = err // answers were dropped; read on
			continue
		}
		if err != nil {
			if lost == nil {
				lost = err
			}
			break
		}
		if p.answers(p.rbuf[:n], reqs, results, first) {
			if lost == nil {
				return // unanswered requests were accepted: only failures are answered
			}
			break
		}
	}
	for i := range reqs {
		if !reqs[i].answered {
			results[i] = fmt.Errorf("the kernel's answer was lost (%v): result unknown: %w", lost, syscall.ENOBUFS)
		}
	}
}

// answers records the answers in one datagram; true once the last
// request's has been read.
func (p *pipe) answers(b []byte, reqs []pending, results []error, first uint32) bool {
	done := false
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:4]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			break
		}
		typ := ne.Uint16(b[4:6])
		seq := ne.Uint32(b[8:12])
		i := int(seq - first)
		if typ == unix.NLMSG_ERROR && i >= 0 && i < len(reqs) && l >= unix.SizeofNlMsghdr+4 {
			if code := int32(ne.Uint32(b[16:20])); code != 0 {
				results[i] = syscall.Errno(-code)
			}
			reqs[i].answered = true
			if i == len(reqs)-1 {
				done = true
			}
		}
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next > len(b) {
			break
		}
		b = b[next:]
	}
	return done
}

// ndmsg is struct ndmsg: family, pad, pad, ifindex, state, flags, type.
func ndmsg(family uint8, idx int, state uint16, flags uint8) []byte {
	b := make([]byte, sizeofNdmsg)
	b[0] = family
	ne.PutUint32(b[4:8], uint32(idx))
	ne.PutUint16(b[8:10], state)
	b[10] = flags
	return b
}

// rtmsg is struct rtmsg for a main-table unicast route.
func rtmsg(family uint8, dstLen int, del bool) []byte {
	b := make([]byte, sizeofRtmsg)
	b[0], b[1] = family, uint8(dstLen)
	b[4] = unix.RT_TABLE_MAIN
	b[5], b[6] = unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE
	if del {
		b[5], b[6] = 0, unix.RT_SCOPE_NOWHERE
	}
	b[7] = unix.RTN_UNICAST
	return b
}

func (c *batchCtx) ensurePipe() bool {
	if c.pipe == nil && c.pipeErr == nil {
		c.pipe, c.pipeErr = openPipe(c.netns)
	}
	return c.pipeErr == nil
}

// queue puts entry i into the pipe when it is one of the common writes:
// a neighbour or FDB change, or a route through a nexthop of ours. false
// leaves the entry to apply, which also words every malformed entry's
// error as before.
func (c *batchCtx) queue(i int, e batchEntry, entries []batchEntry) bool {
	switch e.Kind {
	case "neigh.set", "neigh.del", "fdb.append", "fdb.del", "route.replace":
	default:
		return false
	}
	if c.pipeErr != nil {
		return false
	}
	idx, err := c.links.lookup(e.Dev)
	if err != nil {
		return false
	}
	done := func(err error) { c.result(i, e, err) }
	switch e.Kind {
	case "neigh.set", "neigh.del":
		if !c.queueNeigh(e, idx, e.IP, e.Kind == "neigh.del", unix.NLM_F_REPLACE, 0, done) {
			return false
		}
	case "fdb.append", "fdb.del":
		if !c.queueNeigh(e, idx, e.Dst, e.Kind == "fdb.del", unix.NLM_F_APPEND, netlink.NTF_SELF, done) {
			return false
		}
	case "route.replace":
		if !e.Nexthop || e.Nhid != 0 {
			return false
		}
		dst, err := netip.ParsePrefix(e.Dst)
		if err != nil {
			return false
		}
		gw, ok := pipeAddr(e.Gw)
		if !ok || c.nh.load(c.netns) != nil || c.nh.unsupported {
			return false
		}
		k := keyOf(gw, idx, e.Onlink)
		id, ok := c.nh.ours[k]
		if !ok {
			c.precreate(i, entries)
			if id, ok = c.nh.ours[k]; !ok {
				return false
			}
		}
		if !c.ensurePipe() {
			return false
		}
		dst = dst.Masked()
		off := c.pipe.msg(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, rtmsg(addrFamily(dst.Addr()), dst.Bits(), false))
		c.pipe.attr(unix.RTA_DST, dst.Addr().AsSlice())
		if e.Metric > 0 {
			c.pipe.attrU32(unix.RTA_PRIORITY, uint32(e.Metric))
		}
		c.pipe.attrU32(rtaNhID, id)
		wasCached := c.nh.cached
		c.pipe.end(off, e.Group, func(err error) {
			// A cached nexthop deleted behind our back ("Nexthop id does not
			// exist"): read the kernel again and write this entry on its own.
			if err == syscall.EINVAL && wasCached {
				if c.nh.cached {
					c.nh.stale()
				}
				err = c.apply(e)
			}
			done(err)
		})
	}
	if c.pipe.full() {
		c.pipe.flush()
	}
	return true
}

// queueNeigh queues one neighbour-table write: an ARP/NDP entry for addr,
// or with ntf NTF_SELF an entry of the VXLAN device's FDB (family
// AF_BRIDGE) whose NDA_DST, addr, is the remote VTEP. create is the flag a
// set adds to NLM_F_CREATE: REPLACE for a neighbour, APPEND for the FDB
// (one MAC may have several remotes). false leaves the entry to apply.
func (c *batchCtx) queueNeigh(e batchEntry, idx int, addr string, del bool, create uint16, ntf uint8, done func(error)) bool {
	a, ok := pipeAddr(addr)
	if !ok {
		return false
	}
	mac, ok := pipeMAC(e.MAC)
	if !ok || !c.ensurePipe() {
		return false
	}
	fam := addrFamily(a)
	if ntf == netlink.NTF_SELF {
		fam = unix.AF_BRIDGE
	}
	typ, flags := uint16(unix.RTM_NEWNEIGH), uint16(unix.NLM_F_CREATE)|create
	if del {
		typ, flags = unix.RTM_DELNEIGH, 0
	}
	off := c.pipe.msg(typ, flags, ndmsg(fam, idx, netlink.NUD_PERMANENT, ntf))
	c.pipe.attr(unix.NDA_DST, a.AsSlice())
	if mac != nil {
		c.pipe.attr(unix.NDA_LLADDR, mac)
	}
	c.pipe.end(off, e.Group, done)
	return true
}

// addrFamily is the address family netlink names addr with.
func addrFamily(addr netip.Addr) uint8 {
	if addr.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// precreate creates our nexthops for the run of nexthop routes from entry
// i on that lack one, pipelined, and waits for the kernel: a route may name
// an id only once the kernel has confirmed the nexthop is ours (an id taken
// by somebody else meanwhile answers EEXIST and is never used). A nexthop
// that could not be made is left to the entry's own try, which reports why.
func (c *batchCtx) precreate(i int, entries []batchEntry) {
	if !c.ensurePipe() {
		return
	}
	c.pipe.flush()
	planned := map[nhKey]bool{}
	t := c.nh
	for j := i; j < len(entries) && !c.pipe.full(); j++ {
		e := entries[j]
		if e.Kind != "route.replace" || !e.Nexthop || e.Nhid != 0 {
			break
		}
		if e.Group != 0 && c.failed[e.Group] {
			continue
		}
		idx, err := c.links.lookup(e.Dev)
		if err != nil {
			continue
		}
		gw, ok := pipeAddr(e.Gw)
		if !ok {
			continue
		}
		k := keyOf(gw, idx, e.Onlink)
		if _, ok := t.ours[k]; ok || planned[k] {
			continue
		}
		planned[k] = true
		for t.byID[t.next].ID != 0 {
			t.next++
		}
		id := t.next
		t.byID[id] = nexthop{ID: id} // taken while in flight
		m := nhmsg{Family: k.family, Protocol: NexthopProtocol}
		if k.onlink {
			m.Flags = unix.RTNH_F_ONLINK
		}
		off := c.pipe.msg(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_EXCL, m.Serialize())
		c.pipe.attrU32(unix.NHA_ID, id)
		c.pipe.attrU32(unix.NHA_OIF, k.oif)
		c.pipe.attr(unix.NHA_GATEWAY, k.gw.AsSlice())
		c.pipe.end(off, 0, func(err error) {
			switch {
			case err == nil:
				t.add(nexthop{ID: id, Family: k.family, Protocol: NexthopProtocol, Onlink: k.onlink, Oif: k.oif, Gw: k.gw})
			case errors.Is(err, syscall.EEXIST):
				// somebody else's since our dump: stays marked taken, never replaced
			case errors.Is(err, syscall.ENOBUFS):
				// the answer was lost, not the request: the kernel may hold it,
				// so the id stays marked taken and the next exact pass sorts it out
			default:
				delete(t.byID, id)
			}
		})
	}
	c.pipe.flush()
}

// pipeAddr parses an address the way the kernel is sent it; false leaves
// anything unusual (a zone, an IPv4-mapped IPv6 address) to the plain path.
func pipeAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, false
	}
	return a, true
}

func pipeMAC(s string) (net.HardwareAddr, bool) {
	if s == "" {
		return nil, true
	}
	mac, err := net.ParseMAC(s)
	return mac, err == nil
}
