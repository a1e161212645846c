package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsReq is embedded by every request that may target another network
// namespace, given as a path such as /var/run/netns/pod1 or /proc/<pid>/ns/net.
type nsReq struct {
	Netns string `json:"netns,omitempty"`
}

// handle opens a netlink handle whose sockets live in the requested netns
// (see openHandle: the caller's thread never changes namespace).
func (r nsReq) handle() (*netlink.Handle, func(), error) {
	h, err := openHandle(r.Netns)
	if err != nil {
		return nil, nil, err
	}
	return h, h.Close, nil
}

// nsScoped is any request that names the netns it applies to.
type nsScoped interface {
	handle() (*netlink.Handle, func(), error)
}

// openReq decodes a request and opens a netlink handle in its netns; the
// caller defers the returned close function.
func openReq(raw []byte, r nsScoped) (*netlink.Handle, func(), error) {
	if err := decode(raw, r); err != nil {
		return nil, nil, err
	}
	return r.handle()
}

type linkJSON struct {
	Index       int        `json:"index"`
	Name        string     `json:"name"`
	Type        string     `json:"type"`
	MTU         int        `json:"mtu"`
	MAC         string     `json:"mac"`
	Up          bool       `json:"up"`
	OperState   string     `json:"operState"`
	MasterIndex int        `json:"masterIndex"`
	ParentIndex int        `json:"parentIndex"`
	PeerNetnsID int        `json:"peerNetnsId"`
	Hairpin     *bool      `json:"hairpin,omitempty"`
	Vxlan       *vxlanJSON `json:"vxlan,omitempty"`
}

type vxlanJSON struct {
	VNI      int    `json:"vni"`
	Local    string `json:"local"`
	DevIndex int    `json:"devIndex"`
	Port     int    `json:"port"`
	Learning bool   `json:"learning"`
}

func toLinkJSON(h *netlink.Handle, l netlink.Link) linkJSON {
	a := l.Attrs()
	out := linkJSON{
		Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU,
		MAC: a.HardwareAddr.String(), Up: a.Flags&net.FlagUp != 0,
		OperState: a.OperState.String(), MasterIndex: a.MasterIndex,
		ParentIndex: a.ParentIndex, PeerNetnsID: a.NetNsID,
	}
	if v, ok := l.(*netlink.Vxlan); ok {
		local := ""
		if v.SrcAddr != nil {
			local = v.SrcAddr.String()
		}
		out.Vxlan = &vxlanJSON{VNI: v.VxlanId, Local: local, DevIndex: v.VtepDevIndex, Port: v.Port, Learning: v.Learning}
	}
	if a.MasterIndex != 0 {
		// Hairpin lives in the bridge port's protinfo, which only a bridge
		// port has; a failure here just leaves the field out.
		if pi, err := h.LinkGetProtinfo(l); err == nil {
			hp := pi.Hairpin
			out.Hairpin = &hp
		}
	}
	return out
}

type linkReq struct {
	nsReq
	Name  string `json:"name,omitempty"`
	Index int    `json:"index,omitempty"`
}

func (r linkReq) find(h *netlink.Handle) (netlink.Link, error) {
	if r.Name != "" {
		return h.LinkByName(r.Name)
	}
	if r.Index > 0 {
		return h.LinkByIndex(r.Index)
	}
	return nil, fmt.Errorf("link name or index required: %w", syscall.EINVAL)
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// withLink runs fn on the link a request names, inside the request's netns.
func withLink(raw []byte, fn func(h *netlink.Handle, l netlink.Link, r linkReq) (interface{}, error)) (interface{}, error) {
	var r linkReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := r.find(h)
	if err != nil {
		return nil, err
	}
	return fn(h, l, r)
}

func opLinkGet(raw []byte) (interface{}, error) {
	return withLink(raw, func(h *netlink.Handle, l netlink.Link, _ linkReq) (interface{}, error) {
		return toLinkJSON(h, l), nil
	})
}

func opLinkList(raw []byte) (interface{}, error) {
	var r nsReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	out := make([]linkJSON, 0, len(links))
	for _, l := range links {
		out = append(out, toLinkJSON(h, l))
	}
	return out, nil
}

func opLinkDel(raw []byte) (interface{}, error) {
	return withLink(raw, func(h *netlink.Handle, l netlink.Link, _ linkReq) (interface{}, error) {
		return nil, h.LinkDel(l)
	})
}

type linkSetReq struct {
	linkReq
	Up      *bool   `json:"up,omitempty"`
	MTU     int     `json:"mtu,omitempty"`
	Master  *string `json:"master,omitempty"`
	Hairpin *bool   `json:"hairpin,omitempty"`
	MAC     string  `json:"mac,omitempty"`
	NewName string  `json:"newName,omitempty"`
}

// opLinkSet applies each requested attribute in a fixed order: the name and
// MAC can only change while the link is down, and up comes last.
func opLinkSet(raw []byte) (interface{}, error) {
	var r linkSetReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := r.find(h)
	if err != nil {
		return nil, err
	}
	if r.NewName != "" && r.NewName != l.Attrs().Name {
		if err := h.LinkSetName(l, r.NewName); err != nil {
			return nil, err
		}
	}
	if r.MAC != "" {
		mac, err := net.ParseMAC(r.MAC)
		if err != nil {
			return nil, fmt.Errorf("bad mac %q: %w", r.MAC, syscall.EINVAL)
		}
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, err
		}
	}
	if r.MTU > 0 && r.MTU != l.Attrs().MTU {
		if err := h.LinkSetMTU(l, r.MTU); err != nil {
			return nil, err
		}
	}
	if r.Master != nil {
		if err := setMaster(h, l, *r.Master); err != nil {
			return nil, err
		}
	}
	if r.Hairpin != nil {
		if err := h.LinkSetHairpin(l, *r.Hairpin); err != nil {
			return nil, err
		}
	}
	if r.Up != nil {
		if *r.Up {
			err = h.LinkSetUp(l)
		} else {
			err = h.LinkSetDown(l)
		}
		if err != nil {
			return nil, err
		}
	}
	l, err = h.LinkByIndex(l.Attrs().Index)
	if err != nil {
		return nil, err
	}
	return toLinkJSON(h, l), nil
}

func setMaster(h *netlink.Handle, l netlink.Link, master string) error {
	if master == "" {
		return h.LinkSetNoMaster(l)
	}
	m, err := h.LinkByName(master)
	if err != nil {
		return err
	}
	return h.LinkSetMasterByIndex(l, m.Attrs().Index)
}

// namedLinkReq creates a link that needs nothing but a name and an MTU.
type namedLinkReq struct {
	nsReq
	Name string `json:"name"`
	MTU  int    `json:"mtu,omitempty"`
}

// addNamedLink creates the link make builds from the request's name and MTU
// and answers the link as the kernel now has it.
func addNamedLink(raw []byte, make func(netlink.LinkAttrs) netlink.Link) (interface{}, error) {
	var r namedLinkReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := h.LinkAdd(make(netlink.LinkAttrs{Name: r.Name, MTU: r.MTU, TxQLen: -1})); err != nil {
		return nil, err
	}
	l, err := h.LinkByName(r.Name)
	if err != nil {
		return nil, err
	}
	return toLinkJSON(h, l), nil
}

func opBridgeAdd(raw []byte) (interface{}, error) {
	return addNamedLink(raw, func(a netlink.LinkAttrs) netlink.Link { return &netlink.Bridge{LinkAttrs: a} })
}

type vethReq struct {
	nsReq           // where the host end is created
	Name     string `json:"name"`
	MTU      int    `json:"mtu,omitempty"`
	MAC      string `json:"mac,omitempty"`
	PeerName string `json:"peerName"`
	PeerMAC  string `json:"peerMac,omitempty"`
	PeerNs   string `json:"peerNetns"`
}

// opVethAdd creates the pair with its peer born directly inside the target
// netns, so a name clash inside the pod (eth0 already there) fails the
// create instead of leaving a half-moved device behind.
func opVethAdd(raw []byte) (interface{}, error) {
	var r vethReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	// The peer is named by an fd; handing the kernel an fd switches no thread.
	peerNs, err := netns.GetFromPath(r.PeerNs)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", r.PeerNs, err)
	}
	defer peerNs.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: r.Name, MTU: r.MTU, TxQLen: -1},
		PeerName:      r.PeerName,
		PeerNamespace: netlink.NsFd(int(peerNs)),
	}
	if r.MAC != "" {
		if veth.HardwareAddr, err = net.ParseMAC(r.MAC); err != nil {
			return nil, fmt.Errorf("bad mac %q: %w", r.MAC, syscall.EINVAL)
		}
	}
	if r.PeerMAC != "" {
		if veth.PeerHardwareAddr, err = net.ParseMAC(r.PeerMAC); err != nil {
			return nil, fmt.Errorf("bad peer mac %q: %w", r.PeerMAC, syscall.EINVAL)
		}
	}
	if err := h.LinkAdd(veth); err != nil {
		return nil, err
	}
	host, err := h.LinkByName(r.Name)
	if err != nil {
		return nil, err
	}
	peerH, err := openHandle(r.PeerNs)
	if err != nil {
		_ = h.LinkDel(host)
		return nil, err
	}
	defer peerH.Close()
	peer, err := peerH.LinkByName(r.PeerName)
	if err == nil && r.MTU > 0 && peer.Attrs().MTU != r.MTU {
		err = peerH.LinkSetMTU(peer, r.MTU)
	}
	if err != nil {
		_ = h.LinkDel(host)
		return nil, err
	}
	return map[string]linkJSON{"host": toLinkJSON(h, host), "peer": toLinkJSON(peerH, peer)}, nil
}

type vxlanReq struct {
	nsReq
	Name     string `json:"name"`
	VNI      int    `json:"vni"`
	Local    string `json:"local"`
	Dev      string `json:"dev,omitempty"`
	Port     int    `json:"port"`
	Learning bool   `json:"learning"`
	MTU      int    `json:"mtu,omitempty"`
	MAC      string `json:"mac,omitempty"`
}

func opVxlanAdd(raw []byte) (interface{}, error) {
	var r vxlanReq
	h, done, err := openReq(raw, &r)
	if err != nil {
		return nil, err
	}
	defer done()
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: r.Name, MTU: r.MTU, TxQLen: -1},
		VxlanId:   r.VNI, Port: r.Port, Learning: r.Learning,
	}
	if r.Local != "" {
		if vx.SrcAddr = net.ParseIP(r.Local); vx.SrcAddr == nil {
			return nil, fmt.Errorf("bad local ip %q: %w", r.Local, syscall.EINVAL)
		}
	}
	if r.MAC != "" {
		if vx.HardwareAddr, err = net.ParseMAC(r.MAC); err != nil {
			return nil, fmt.Errorf("bad mac %q: %w", r.MAC, syscall.EINVAL)
		}
	}
	if r.Dev != "" {
		under, err := h.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("underlay %s: %w", r.Dev, err)
		}
		vx.VtepDevIndex = under.Attrs().Index
	}
	if err := h.LinkAdd(vx); err != nil {
		return nil, err
	}
	l, err := h.LinkByName(r.Name)
	if err != nil {
		return nil, err
	}
	return toLinkJSON(h, l), nil
}

// opWireguardAdd creates a kernel WireGuard link. A kernel without the
// module answers EOPNOTSUPP, which is how callers tell it apart and fall
// back to a userspace implementation.
func opWireguardAdd(raw []byte) (interface{}, error) {
	return addNamedLink(raw, func(a netlink.LinkAttrs) netlink.Link { return &netlink.Wireguard{LinkAttrs: a} })
}
