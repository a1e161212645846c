// Ethernet (EUI-48) addresses as the CNI world writes them. The forms read
// are Go's net.ParseMAC forms for six bytes (the reference plugins parse a
// requested MAC with it), and the text written is Go's HardwareAddr.String()
// and the kernel's (`ip link`): lowercase, colon-separated. A result's or a
// CHECK's MAC is compared as text, so every MAC must reach it in that form.

/** aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff (any case), or aabb.ccdd.eeff. */
const COLON_OR_DASH = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i;
const DOTTED = /^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/i;

/** The six-byte address in canonical text (`0a:58:0a:f4:01:07`), or undefined if `text` is none. */
export function parseMac(text: string): string | undefined {
  let hex: string;
  if (COLON_OR_DASH.test(text)) hex = text.replace(/[:-]/g, '');
  else if (DOTTED.test(text)) hex = text.replace(/\./g, '');
  else return undefined;
  return hex.toLowerCase().match(/../g)!.join(':');
}

/**
 * Why the kernel would refuse `mac` (canonical) as a device address, or
 * undefined when it takes it: the group bit set (multicast, broadcast) or
 * all zeros fail its is_valid_ether_addr (a veth answers EADDRNOTAVAIL).
 */
export function nonUnicastReason(mac: string): string | undefined {
  if (parseInt(mac.slice(0, 2), 16) & 1) return 'a multicast address';
  if (mac === '00:00:00:00:00:00') return 'the all-zero address';
  return undefined;
}
