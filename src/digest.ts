// SHA-256 of short text (a container ID and an interface name; the asset
// manifest), in plain JavaScript. node:crypto would do it, but loading it
// loads about 30 more of Node's modules (its ciphers pull in the stream
// modules), and the standalone plugin pays module loading on every pod's
// ADD and DEL; this costs microseconds. Not for bulk data: the executable's
// embedded files are still checked with node:crypto (src/sea/assets.ts).

/** The first 32 bits of the fractional parts of the square roots (H) and cube roots (K) of the first primes (FIPS 180-4). */
function fractionBits(count: number, root: (p: number) => number): Uint32Array {
  const out = new Uint32Array(count);
  for (let p = 2, n = 0; n < count; p++) {
    let prime = true;
    for (let d = 2; d * d <= p; d++) {
      if (p % d === 0) {
        prime = false;
        break;
      }
    }
    if (!prime) continue;
    const r = root(p);
    out[n++] = (r - Math.floor(r)) * 0x100000000;
  }
  return out;
}

let H: Uint32Array | undefined;
let K: Uint32Array | undefined;

function rotr(x: number, n: number): number {
  return (x >>> n) | (x << (32 - n));
}

/** Lower-case hex SHA-256 of the UTF-8 bytes of `text`. */
export function sha256Hex(text: string): string {
  H ??= fractionBits(8, Math.sqrt);
  K ??= fractionBits(64, Math.cbrt);
  const data = Buffer.from(text, 'utf8');
  // Message, 0x80, zeros, 64-bit big-endian bit length; whole 64-byte blocks.
  const size = Math.ceil((data.length + 9) / 64) * 64;
  const msg = new Uint8Array(size);
  msg.set(data);
  msg[data.length] = 0x80;
  const view = new DataView(msg.buffer);
  const bits = data.length * 8;
  view.setUint32(size - 8, Math.floor(bits / 0x100000000));
  view.setUint32(size - 4, bits >>> 0);
  const h = Uint32Array.from(H);
  const w = new Uint32Array(64);
  for (let block = 0; block < size; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15]!;
      const y = w[i - 2]!;
      const s0 = rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3);
      const s1 = rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10);
      w[i] = w[i - 16]! + s0 + w[i - 7]! + s1;
    }
    let [a, b, c, d, e, f, g, hh] = h as unknown as [number, number, number, number, number, number, number, number];
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0]! += a;
    h[1]! += b;
    h[2]! += c;
    h[3]! += d;
    h[4]! += e;
    h[5]! += f;
    h[6]! += g;
    h[7]! += hh;
  }
  let hex = '';
  for (const word of h) hex += word.toString(16).padStart(8, '0');
  return hex;
}
