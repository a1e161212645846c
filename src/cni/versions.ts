// CNI spec versions this suite speaks. 0.1.0/0.2.0 are left out on purpose:
// their result shape (ip4/ip6) cannot describe a multi-interface attachment,
// and every runtime that still matters sends 0.3.1 or later.

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];

export const CURRENT_VERSION: CniVersion = '1.1.0';

export function isSupportedVersion(v: string): v is CniVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

const VERSION_FORMAT = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/;

/** True for a plain MAJOR.MINOR.PATCH string, the only form the spec uses. */
export function isVersionFormat(v: string): boolean {
  return VERSION_FORMAT.test(v);
}

function parts(v: string): number[] {
  return v.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : -1));
}

/**
 * Numeric, component-wise comparison ("0.10.0" > "0.4.0"). Missing components
 * count as 0 and non-numeric ones as -1, so a malformed version sorts below
 * every real one instead of throwing.
 */
export function compareVersions(a: string, b: string): number {
  const pa = parts(a);
  const pb = parts(b);
  const n = Math.max(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/**
 * The VERSION answer. The spec echoes the caller's cniVersion; when the caller
 * sent none, or one we cannot speak, we answer with our own current version
 * (which is what the Go skel always does).
 */
export function versionInfo(requested?: string): { cniVersion: string; supportedVersions: string[] } {
  const cniVersion = requested !== undefined && isSupportedVersion(requested) ? requested : CURRENT_VERSION;
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}
