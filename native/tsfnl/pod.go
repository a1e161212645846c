package main

// The pod ops: all of one attachment's kernel work in one shim call each,
// entering the pod's network namespace at most once (on a throw-away locked
// thread, see inNetns):
//
//	pod.inspect   what an earlier ADD left: host veth, its peer, the peer's addresses;
//	              and, when asked, the bridge with its addresses and host sysctls
//	pod.setup     the veth pair (peer born in the pod), bridge port, hairpin,
//	              pod sysctls, addresses, link up, routes (either family)
//	pod.teardown  the attachment's veth, answered once the kernel unlisted it
//
// Netlink sockets stay bound to the namespace they were opened in, so the
// host handle is opened on the caller's thread (the process's own netns)
// and used from the pod thread too; only the pod handle, the sysctl writes
// and the pod side's change watch need the entry.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podError tags a failure the plugin turns into a specific CNI error; the
// reason travels in the reply's "reason" field.
type podError struct {
	reason string
	err    error
}

func (e *podError) Error() string { return e.err.Error() }
func (e *podError) Unwrap() error { return e.err }

const (
	reasonIfnameTaken   = "ifname-taken"   // the pod has an interface of that name that is not ours
	reasonBridgeMissing = "bridge-missing" // the bridge to enslave to is gone
	reasonPodLinkGone   = "pod-link-gone"  // the pod end vanished while it was configured
	reasonNotNetns      = "not-netns"      // the path is not a network namespace
)

func tagged(reason string, err error) error { return &podError{reason: reason, err: err} }

// routeHandle opens a NETLINK_ROUTE-only handle in the calling thread's
// netns (a plain NewHandle opens a socket for every netlink family).
func routeHandle() (*netlink.Handle, error) {
	return withSocketTimeout(netlink.NewHandle(unix.NETLINK_ROUTE))
}

// inPodNetns runs fn inside the pod's netns (see inNetnsFd) with a route
// handle opened there, closed when fn returns.
func inPodNetns(ns netns.NsHandle, label string, fn func(podH *netlink.Handle) (interface{}, error)) (interface{}, error) {
	return inNetnsFd(ns, label, func() (interface{}, error) {
		podH, err := routeHandle()
		if err != nil {
			return nil, err
		}
		defer podH.Close()
		return fn(podH)
	})
}

// plainLinkByName looks a link up with h: nil without error when there is
// none, else the link with its plainLinkJSON.
func plainLinkByName(h *netlink.Handle, name string) (netlink.Link, *linkJSON, error) {
	l, err := linkOrNil(h.LinkByName(name))
	if err != nil || l == nil {
		return nil, nil, err
	}
	j := plainLinkJSON(l)
	return l, &j, nil
}

// openNetns opens a network namespace handle without blocking (a FIFO at
// the path must not hang the call) and checks that it is one.
func openNetns(path string) (netns.NsHandle, error) {
	// A netns handle stats as a regular file; anything else (a device, a
	// directory) is refused before the open, which could have side effects.
	var pre unix.Stat_t
	if err := unix.Stat(path, &pre); err != nil {
		return -1, tagged(reasonNotNetns, fmt.Errorf("netns %s: %w", path, err))
	}
	if pre.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, tagged(reasonNotNetns, fmt.Errorf("%s is not a network namespace: %w", path, syscall.EINVAL))
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, tagged(reasonNotNetns, fmt.Errorf("open netns %s: %w", path, err))
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	const nsfsMagic = 0x6e736673
	const nsGetNstype = 0xb703 // NS_GET_NSTYPE
	if st.Type == nsfsMagic {
		if t, err := unix.IoctlRetInt(fd, nsGetNstype); err == nil && t == unix.CLONE_NEWNET {
			return netns.NsHandle(fd), nil
		}
	}
	unix.Close(fd)
	return -1, tagged(reasonNotNetns, fmt.Errorf("%s is not a network namespace: %w", path, syscall.EINVAL))
}

func linkOrNil(l netlink.Link, err error) (netlink.Link, error) {
	if err != nil {
		if isLinkNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return l, nil
}

// plainLinkJSON is toLinkJSON without the bridge-port protinfo request.
func plainLinkJSON(l netlink.Link) linkJSON {
	a := l.Attrs()
	return linkJSON{
		Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU,
		MAC: a.HardwareAddr.String(), Up: a.Flags&net.FlagUp != 0,
		OperState: a.OperState.String(), MasterIndex: a.MasterIndex,
		ParentIndex: a.ParentIndex, PeerNetnsID: a.NetNsID,
	}
}

// vethPeers: the two ends of one pair name each other (IFLA_LINK).
func vethPeers(pod, host netlink.Link) bool {
	return pod.Type() == "veth" && host.Type() == "veth" &&
		pod.Attrs().ParentIndex == host.Attrs().Index && host.Attrs().ParentIndex == pod.Attrs().Index
}

func validIfname(name string) bool {
	return name != "" && len(name) < unix.IFNAMSIZ && name != "." && name != ".." &&
		!containsAny(name, "/ \t\n:")
}

func containsAny(s, chars string) bool {
	for _, c := range chars {
		for _, d := range s {
			if c == d {
				return true
			}
		}
	}
	return false
}

// ---- pod.inspect

type podInspectReq struct {
	Netns       string `json:"netns"`
	HostName    string `json:"hostName"`
	Ifname      string `json:"ifname"`
	BridgeIndex int    `json:"bridgeIndex"`
	// Bridge, when set, is looked up first (its index then stands for
	// BridgeIndex) and reported with its addresses: the node side's state an
	// ADD checks, read in the same call instead of one call per lookup.
	Bridge string `json:"bridge,omitempty"`
	// HostSysctls are read in the caller's (the host's) netns and reported
	// by key; a key that does not exist is reported as "".
	HostSysctls []string `json:"hostSysctls,omitempty"`
}

type podInspectReply struct {
	Host *linkJSON `json:"host"`
	Pod  *linkJSON `json:"pod"`
	// the pod end's addresses (either family), when it is the host end's peer
	PodAddresses []string `json:"podAddresses"`
	// the bridge asked for (null when there is no link of that name), and
	// its addresses of either family
	Bridge      *linkJSON         `json:"bridge,omitempty"`
	BridgeAddrs []addrJSON        `json:"bridgeAddrs,omitempty"`
	HostSysctls map[string]string `json:"hostSysctls,omitempty"`
}

// inspectBridge fills in the bridge part of a pod.inspect reply and returns
// the bridge's index (0 when there is none).
func inspectBridge(hostH *netlink.Handle, r podInspectReq, out *podInspectReply) (int, error) {
	for _, key := range r.HostSysctls {
		p, err := sysctlReq{Key: key}.path()
		if err != nil {
			return 0, err
		}
		if out.HostSysctls == nil {
			out.HostSysctls = map[string]string{}
		}
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		out.HostSysctls[key] = strings.TrimSpace(string(b))
	}
	br, bj, err := plainLinkByName(hostH, r.Bridge)
	if err != nil || br == nil {
		return 0, err
	}
	out.Bridge = bj
	addrs, err := hostH.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return 0, err
	}
	out.BridgeAddrs = make([]addrJSON, 0, len(addrs))
	for _, a := range addrs {
		out.BridgeAddrs = append(out.BridgeAddrs, addrJSON{CIDR: a.IPNet.String(), LinkIndex: a.LinkIndex, Scope: a.Scope})
	}
	return br.Attrs().Index, nil
}

// opPodInspect reports the attachment an earlier ADD left. A fresh ADD stops
// at the first lookup (no host veth) and never enters the pod's netns.
func opPodInspect(raw []byte) (interface{}, error) {
	var r podInspectReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	out := podInspectReply{PodAddresses: []string{}}
	hostH, err := routeHandle()
	if err != nil {
		return nil, err
	}
	defer hostH.Close()
	if r.Bridge != "" {
		if r.BridgeIndex, err = inspectBridge(hostH, r, &out); err != nil {
			return nil, err
		}
	}
	host, hj, err := plainLinkByName(hostH, r.HostName)
	if err != nil || host == nil {
		return out, err
	}
	out.Host = hj
	if r.BridgeIndex == 0 || host.Attrs().MasterIndex != r.BridgeIndex || r.Netns == "" {
		return out, nil
	}
	ns, err := openNetns(r.Netns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return inPodNetns(ns, r.Netns, func(podH *netlink.Handle) (interface{}, error) {
		pod, pj, err := plainLinkByName(podH, r.Ifname)
		if err != nil || pod == nil {
			return out, err
		}
		out.Pod = pj
		if !vethPeers(pod, host) {
			return out, nil
		}
		addrs, err := podH.AddrList(pod, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			out.PodAddresses = append(out.PodAddresses, a.IPNet.String())
		}
		return out, nil
	})
}

// ---- pod.setup

type podRouteReq struct {
	Dst string `json:"dst"`
	Gw  string `json:"gw,omitempty"`
}

type podSysctl struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type podSetupReq struct {
	Netns    string `json:"netns"`
	HostName string `json:"hostName"`
	Ifname   string `json:"ifname"`
	MTU      int    `json:"mtu,omitempty"`
	Bridge   string `json:"bridge"`
	Hairpin  bool   `json:"hairpin"`
	// written inside the pod's netns once its interface exists, before any
	// address (e.g. net/ipv4/conf/eth0/arp_notify = 1)
	Sysctls   []podSysctl   `json:"sysctls,omitempty"`
	Addresses []string      `json:"addresses"`
	Routes    []podRouteReq `json:"routes"`
	// MAC, when set, is the pod end's address from its birth (the runtime's
	// requested MAC); empty lets the kernel pick a random one.
	MAC string `json:"mac,omitempty"`
}

// podPlan is a request parsed in full before the kernel is touched, so a bad
// address or route fails the call with nothing made.
type podPlan struct {
	req     podSetupReq
	addrs   []*net.IPNet
	routes  []*netlink.Route // LinkIndex filled in once the pod end exists
	sysctls []podSysctl      // keys resolved to /proc/sys paths
	mac     net.HardwareAddr // nil = the kernel's random one
}

func planPodSetup(r podSetupReq) (*podPlan, error) {
	if !validIfname(r.HostName) || !validIfname(r.Ifname) || r.Bridge == "" || r.Netns == "" {
		return nil, fmt.Errorf("pod.setup needs netns, hostName, ifname and bridge (valid interface names): %w", syscall.EINVAL)
	}
	p := &podPlan{req: r}
	if r.MAC != "" {
		mac, err := planMAC(r.MAC)
		if err != nil {
			return nil, err
		}
		p.mac = mac
	}
	for _, c := range r.Addresses {
		n, err := parseCIDR(c)
		if err != nil {
			return nil, err
		}
		p.addrs = append(p.addrs, n)
	}
	for _, rt := range r.Routes {
		route, err := planRoute(rt)
		if err != nil {
			return nil, err
		}
		p.routes = append(p.routes, route)
	}
	for _, s := range r.Sysctls {
		path, err := sysctlReq{Key: s.Key}.path()
		if err != nil {
			return nil, err
		}
		p.sysctls = append(p.sysctls, podSysctl{Key: path, Value: s.Value})
	}
	return p, nil
}

// planMAC reads a requested pod MAC: six bytes, unicast and not all zeros,
// which is all a veth takes (the kernel refuses anything else with
// EADDRNOTAVAIL or EINVAL). The plugin has checked it and names the source
// in its error; this guard keeps a bad request from reaching the kernel.
func planMAC(text string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(text)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("bad pod MAC %q: %w", text, syscall.EINVAL)
	}
	if mac[0]&1 != 0 || string(mac) == string(make([]byte, 6)) {
		return nil, fmt.Errorf("pod MAC %s is not a unicast address: %w", mac, syscall.EINVAL)
	}
	return mac, nil
}

// planRoute: a route via the pod interface; a /0 destination is the
// family's default route (no RTA_DST, as `ip route add default` makes).
func planRoute(r podRouteReq) (*netlink.Route, error) {
	_, dst, err := net.ParseCIDR(r.Dst)
	if err != nil {
		return nil, fmt.Errorf("bad route dst %q: %w", r.Dst, syscall.EINVAL)
	}
	rt := &netlink.Route{Dst: dst}
	if ones, _ := dst.Mask.Size(); ones == 0 {
		rt.Dst = nil
	}
	if r.Gw == "" {
		rt.Scope = netlink.SCOPE_LINK
		if rt.Dst == nil {
			return nil, fmt.Errorf("default route %q needs a gateway: %w", r.Dst, syscall.EINVAL)
		}
		return rt, nil
	}
	if rt.Gw, err = parseIP(r.Gw); err != nil {
		return nil, err
	}
	if (rt.Gw.To4() == nil) != (dst.IP.To4() == nil) {
		return nil, fmt.Errorf("route %s via %s mixes address families: %w", r.Dst, r.Gw, syscall.EINVAL)
	}
	return rt, nil
}

type podSetupReply struct {
	Host linkJSON `json:"host"`
	Pod  linkJSON `json:"pod"`
}

// opPodSetup makes one attachment. A host veth of that name is a leftover
// of an interrupted ADD of the same attachment (the caller holds its lock):
// it is removed with its pod end first. An interface of that name in the
// pod that is not the leftover's peer belongs to someone else: refused,
// untouched. On any failure after the pair exists, the pair is deleted.
func opPodSetup(raw []byte) (interface{}, error) {
	var r podSetupReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	plan, err := planPodSetup(r)
	if err != nil {
		return nil, err
	}
	ns, err := openNetns(r.Netns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	hostH, err := routeHandle()
	if err != nil {
		return nil, err
	}
	defer hostH.Close()
	br, err := hostH.LinkByName(r.Bridge)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, tagged(reasonBridgeMissing, fmt.Errorf("bridge %s not found: %w", r.Bridge, syscall.ENODEV))
		}
		return nil, err
	}
	leftover, err := linkOrNil(hostH.LinkByName(r.HostName))
	if err != nil {
		return nil, err
	}
	return inPodNetns(ns, r.Netns, func(podH *netlink.Handle) (interface{}, error) {
		return setupInPod(plan, ns, hostH, podH, br, leftover)
	})
}

// setupInPod runs on the thread inside the pod's netns: podH and the sysctl
// files are the pod's, hostH is still the host's.
func setupInPod(p *podPlan, ns netns.NsHandle, hostH, podH *netlink.Handle, br, leftover netlink.Link) (interface{}, error) {
	r := p.req
	inPod, err := linkOrNil(podH.LinkByName(r.Ifname))
	if err != nil {
		return nil, err
	}
	if inPod != nil && !(leftover != nil && vethPeers(inPod, leftover)) {
		return nil, ifnameTaken(r.Ifname)
	}
	if leftover != nil {
		if err := hostH.LinkDel(leftover); err != nil && !isLinkNotFound(err) && !errors.Is(err, syscall.ENODEV) {
			return nil, fmt.Errorf("removing leftover %s: %w", r.HostName, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: r.HostName, MTU: r.MTU, TxQLen: -1, MasterIndex: br.Attrs().Index, Flags: net.FlagUp,
		},
		PeerName:      r.Ifname,
		PeerNamespace: netlink.NsFd(int(ns)),
		// Set in the same request that makes the pair: the pod end never
		// shows another address (nothing to undo when setting it fails).
		PeerHardwareAddr: p.mac,
	}
	if err := hostH.LinkAdd(veth); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			if l, _ := linkOrNil(podH.LinkByName(r.Ifname)); l != nil {
				return nil, ifnameTaken(r.Ifname)
			}
		}
		// LinkAdd enslaves in a second request: a failure there (the bridge
		// vanished) leaves the pair behind.
		if h, _ := linkOrNil(hostH.LinkByName(r.HostName)); h != nil && veth.Attrs().Index == h.Attrs().Index {
			_ = hostH.LinkDel(h)
		}
		if isLinkNotFound(err) || errors.Is(err, syscall.ENODEV) {
			return nil, tagged(reasonBridgeMissing, fmt.Errorf("bridge %s vanished while attaching %s: %w", r.Bridge, r.HostName, err))
		}
		return nil, err
	}
	out, err := configurePair(p, hostH, podH)
	if err != nil {
		// The pod end goes with the host end.
		if h, _ := linkOrNil(hostH.LinkByName(r.HostName)); h != nil {
			_ = hostH.LinkDel(h)
		}
		return nil, err
	}
	return out, nil
}

func ifnameTaken(ifname string) error {
	return tagged(reasonIfnameTaken, fmt.Errorf("container already has an interface named %s: %w", ifname, syscall.EEXIST))
}

// configurePair finishes a fresh pair: hairpin on the host end, then the
// pod end's sysctls, addresses, link up and routes.
func configurePair(p *podPlan, hostH, podH *netlink.Handle) (*podSetupReply, error) {
	r := p.req
	host, err := hostH.LinkByName(r.HostName)
	if err != nil {
		return nil, err
	}
	if r.Hairpin {
		if err := hostH.LinkSetHairpin(host, true); err != nil {
			return nil, err
		}
	}
	pod, err := podH.LinkByName(r.Ifname)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, tagged(reasonPodLinkGone, fmt.Errorf("interface %s vanished from %s while it was configured: %w", r.Ifname, r.Netns, syscall.ENODEV))
		}
		return nil, err
	}
	for _, s := range p.sysctls {
		if err := os.WriteFile(s.Key, []byte(s.Value), 0o644); err != nil {
			return nil, fmt.Errorf("pod sysctl %s: %w", s.Key, err)
		}
	}
	for _, a := range p.addrs {
		if err := podH.AddrAdd(pod, &netlink.Addr{IPNet: a}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("address %s on %s: %w", a, r.Ifname, err)
		}
	}
	if err := podH.LinkSetUp(pod); err != nil {
		return nil, err
	}
	for _, rt := range p.routes {
		rt.LinkIndex = pod.Attrs().Index
		if err := podH.RouteReplace(rt); err != nil {
			return nil, fmt.Errorf("route %s on %s: %w", routeName(rt), r.Ifname, err)
		}
	}
	hj, pj := plainLinkJSON(host), plainLinkJSON(pod)
	hj.Up, pj.Up = true, true
	if r.Hairpin {
		hp := true
		hj.Hairpin = &hp
	}
	return &podSetupReply{Host: hj, Pod: pj}, nil
}

func routeName(rt *netlink.Route) string {
	dst := "default"
	if rt.Dst != nil {
		dst = rt.Dst.String()
	}
	if rt.Gw != nil {
		return dst + " via " + rt.Gw.String()
	}
	return dst
}

// ---- pod.teardown

type podTeardownReq struct {
	Netns    string `json:"netns,omitempty"`
	HostName string `json:"hostName"`
	Ifname   string `json:"ifname"`
	// addresses this attachment leases (no prefix): without the host end, a
	// pod interface is removed only when it carries one of them
	Leased []string `json:"leased"`
	// DropRoutes are host routes (CIDRs) via the link DropRoutesDev removed
	// once the attachment is gone, if there are any: the MTU-capping routes
	// the plugin adds to pods older than a bridge MTU raise. Best effort, as
	// a separate route.del would be: absent routes or dev are no failure.
	DropRoutes    []string `json:"dropRoutes,omitempty"`
	DropRoutesDev string   `json:"dropRoutesDev,omitempty"`
}

type podTeardownReply struct {
	// "host" (the host end, and so the pair), "pod" (a pod end without host
	// end), "kept" (a pod interface nothing ties to this attachment), "none"
	Removed string `json:"removed"`
}

func opPodTeardown(raw []byte) (interface{}, error) {
	var r podTeardownReq
	if err := decode(raw, &r); err != nil {
		return nil, err
	}
	if !validIfname(r.HostName) {
		return nil, fmt.Errorf("pod.teardown needs a valid hostName: %w", syscall.EINVAL)
	}
	hostH, err := routeHandle()
	if err != nil {
		return nil, err
	}
	defer hostH.Close()
	reply, err := teardown(hostH, r)
	if err == nil {
		dropHostRoutes(hostH, r.DropRoutesDev, r.DropRoutes)
	}
	return reply, err
}

// dropHostRoutes deletes direct routes to dsts via dev, ignoring every
// failure (no such route, no such dev): nothing the caller could act on.
func dropHostRoutes(h *netlink.Handle, dev string, dsts []string) {
	if dev == "" || len(dsts) == 0 {
		return
	}
	l, err := h.LinkByName(dev)
	if err != nil {
		return
	}
	for _, d := range dsts {
		_, n, err := net.ParseCIDR(d)
		if err != nil {
			continue
		}
		_ = h.RouteDel(&netlink.Route{Dst: n, LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK})
	}
}

func teardown(hostH *netlink.Handle, r podTeardownReq) (interface{}, error) {
	host, err := linkOrNil(hostH.LinkByName(r.HostName))
	if err != nil {
		return nil, err
	}
	if host != nil {
		if hostEndOfPod(hostH, host, r) {
			if err := deletePromptly(host); err != nil {
				return nil, err
			}
			return podTeardownReply{Removed: "host"}, nil
		}
		// The name is another attachment's (the plugin derives it from a
		// 32-bit digest): that pod keeps its link, and this attachment's
		// own pod interface, if any, is removed below as without a host end.
	}
	if r.Netns == "" || !validIfname(r.Ifname) {
		return podTeardownReply{Removed: "none"}, nil
	}
	ns, err := openNetns(r.Netns)
	if err != nil {
		// DEL must succeed when the netns is already gone (or never was one).
		return podTeardownReply{Removed: "none"}, nil
	}
	defer ns.Close()
	return inPodNetns(ns, r.Netns, func(podH *netlink.Handle) (interface{}, error) {
		pod, err := linkOrNil(podH.LinkByName(r.Ifname))
		if err != nil {
			return nil, err
		}
		if pod == nil || pod.Type() != "veth" {
			return podTeardownReply{Removed: "none"}, nil
		}
		addrs, err := podH.AddrList(pod, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		if !carriesAny(addrs, r.Leased) {
			return podTeardownReply{Removed: "kept"}, nil
		}
		if err := deletePromptly(pod); err != nil {
			return nil, err
		}
		return podTeardownReply{Removed: "pod"}, nil
	})
}

// hostEndOfPod reports whether the host link named for the attachment is
// its own: a veth whose peer lives in the pod's netns (IFLA_LINK_NETNSID
// against the id the host gives that netns, asked without entering it, so a
// DEL costs no extra thread), where the pod may since have renamed or moved
// the interface. A veth whose peer is elsewhere is another pod's (the
// plugin derives the name from a 32-bit digest). Without a netns
// (containerd's second DEL, a netns already gone) it cannot tell: the link
// counts as this attachment's only while the attachment still leases an
// address, since an attachment that holds none (a DEL already ran, or its
// ADD failed, as a refused colliding ADD does) has no link left of its own,
// as the reference bridge assumes for a DEL without a netns. Keeping the
// link while the lease is released would leave it on the bridge answering
// for an address the next pod gets. Two attachments of one pod whose names
// collide are not told apart (both peers live in its netns).
func hostEndOfPod(hostH *netlink.Handle, host netlink.Link, r podTeardownReq) bool {
	cannotTell := len(r.Leased) > 0
	if r.Netns == "" || host.Type() != "veth" {
		return cannotTell
	}
	ns, err := openNetns(r.Netns)
	if err != nil {
		return cannotTell
	}
	defer ns.Close()
	id, err := hostH.GetNetNsIdByFd(int(ns))
	if err != nil || id < 0 {
		// No id: no link of this host has its peer there (listing one
		// assigns it), so the peer is not in the pod.
		return err != nil && cannotTell
	}
	return host.Attrs().NetNsID == id
}

func carriesAny(addrs []netlink.Addr, ips []string) bool {
	for _, s := range ips {
		ip := net.ParseIP(s)
		for _, a := range addrs {
			if ip != nil && a.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// deletePromptly deletes a link and returns as soon as the kernel has
// unlisted it (its RTM_DELLINK notification), not when the delete request
// is acknowledged: deleting a veth answers only after the kernel's RCU
// grace periods (rcu_barrier, some 10 to 30 ms, during which RTNL is
// already released). At the notification the pair is gone from both
// namespaces, with its addresses and routes, and its names are free; the
// kernel finishes freeing it while a shim goroutine waits for the answer.
//
// It must run on a thread in the link's netns (the watch socket is opened
// there); the delete itself goes through a handle opened in the same netns,
// owned by the background goroutine.
func deletePromptly(l netlink.Link) error {
	index := l.Attrs().Index
	delH, err := routeHandle()
	if err != nil {
		return err
	}
	watch, werr := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	done := make(chan error, 1)
	go func() {
		defer delH.Close()
		err := delH.LinkDel(l)
		if err != nil && (isLinkNotFound(err) || errors.Is(err, syscall.ENODEV)) {
			err = nil // gone already: what a delete wants
		}
		done <- err
	}()
	if werr != nil {
		return <-done // no watch: wait for the answer
	}
	gone := make(chan struct{})
	stop := make(chan struct{})
	go watchDeletion(watch, index, gone, stop)
	defer close(stop)
	select {
	case err := <-done:
		return err
	case <-gone:
		return nil
	}
}

// watchDeletion closes gone when an RTM_DELLINK for index arrives; it gives
// up (leaving the answer to the delete itself) on stop, on a receive error
// such as ENOBUFS, or after the netlink timeout. It owns and closes sock.
func watchDeletion(sock *nl.NetlinkSocket, index int, gone chan<- struct{}, stop <-chan struct{}) {
	defer sock.Close()
	// A short receive timeout lets the loop notice stop; recvfrom on a
	// closed descriptor would not wake up.
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := sock.SetReceiveTimeout(&tv); err != nil {
		return
	}
	deadline := time.Now().Add(netlinkTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			return
		default:
		}
		msgs, _, err := sock.Receive()
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_DELLINK || len(m.Data) < unix.SizeofIfInfomsg {
				continue
			}
			if int(nl.DeserializeIfInfomsg(m.Data).Index) == index {
				close(gone)
				return
			}
		}
	}
}
