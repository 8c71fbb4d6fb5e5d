// A small NIfTI-1 reader for the 2D viewer: the processor's one-slice real-unit files
// ("values" / "input_values" outputs of 2D DICOM tasks). Reads gzip or plain, little or big
// endian, the common data types, scl_slope/inter, and the sform (else qform, else pixdim) affine.

import { gunzipSync } from "fflate";

export interface Plane {
  width: number; // columns (NIfTI i)
  height: number; // rows (NIfTI j)
  channels: 1 | 3;
  /** Values, row-major: data[(row * width + col) * channels + c]. */
  data: Float32Array;
  /** Voxel (col, row, 0, 1) to RAS+ mm, or null when unknown. */
  affine: number[][] | null;
  /** "mm" when the affine is in millimetres; otherwise lengths are in pixels. */
  spatialUnit: "mm" | "px";
}

const TYPES: Record<number, [number, (v: DataView, o: number, le: boolean) => number]> = {
  2: [1, (v, o) => v.getUint8(o)],
  4: [2, (v, o, le) => v.getInt16(o, le)],
  8: [4, (v, o, le) => v.getInt32(o, le)],
  16: [4, (v, o, le) => v.getFloat32(o, le)],
  64: [8, (v, o, le) => v.getFloat64(o, le)],
  256: [1, (v, o) => v.getInt8(o)],
  512: [2, (v, o, le) => v.getUint16(o, le)],
  768: [4, (v, o, le) => v.getUint32(o, le)],
};

export function readNifti(buffer: ArrayBuffer): Plane {
  let bytes = new Uint8Array(buffer);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let le = true;
  if (v.getInt32(0, true) !== 348) {
    if (v.getInt32(0, false) !== 348) throw new Error("not a NIfTI-1 file");
    le = false;
  }
  const dim = Array.from({ length: 8 }, (_, i) => v.getInt16(40 + 2 * i, le));
  const datatype = v.getInt16(70, le);
  const pixdim = Array.from({ length: 8 }, (_, i) => v.getFloat32(76 + 4 * i, le));
  const voxOffset = Math.max(352, Math.round(v.getFloat32(108, le)));
  let slope = v.getFloat32(112, le);
  const inter = v.getFloat32(116, le);
  if (!slope || !Number.isFinite(slope)) slope = 1;
  const xyztUnits = v.getUint8(123);
  const qformCode = v.getInt16(252, le);
  const sformCode = v.getInt16(254, le);
  const type = TYPES[datatype];
  if (!type) throw new Error(`NIfTI data type ${datatype} is not supported here`);
  const [size, get] = type;
  const width = dim[1];
  const height = Math.max(1, dim[2]);
  const n = width * height; // the first slice of the first volume
  const data = new Float32Array(n);
  // NIfTI order is i fastest: (i, j) -> i + j * width, which is row-major by rows j.
  for (let k = 0; k < n; k++) data[k] = get(v, voxOffset + k * size, le) * slope + (Number.isFinite(inter) ? inter : 0);

  let affine: number[][] | null = null;
  if (sformCode > 0) {
    affine = [0, 1, 2].map((r) => [0, 1, 2, 3].map((c) => v.getFloat32(280 + 16 * r + 4 * c, le)));
    affine.push([0, 0, 0, 1]);
  } else if (qformCode > 0) {
    affine = qformAffine(v, le, pixdim);
  } else if (pixdim[1] > 0 && pixdim[2] > 0) {
    affine = [
      [pixdim[1], 0, 0, 0],
      [0, pixdim[2], 0, 0],
      [0, 0, pixdim[3] || 1, 0],
      [0, 0, 0, 1],
    ];
  }
  const spaceUnit = xyztUnits & 0x07; // 2: mm, 1: m, 3: um, 0: unknown
  const scale = spaceUnit === 1 ? 1000 : spaceUnit === 3 ? 0.001 : 1;
  if (affine && scale !== 1) affine = affine.map((row, r) => (r < 3 ? row.map((x) => x * scale) : row));
  return { width, height, channels: 1, data, affine, spatialUnit: affine && spaceUnit !== 0 ? "mm" : "px" };
}

function qformAffine(v: DataView, le: boolean, pixdim: number[]): number[][] {
  const [b, c, d] = [256, 260, 264].map((o) => v.getFloat32(o, le));
  const [qx, qy, qz] = [268, 272, 276].map((o) => v.getFloat32(o, le));
  const a = Math.sqrt(Math.max(0, 1 - (b * b + c * c + d * d)));
  const qfac = pixdim[0] < 0 ? -1 : 1;
  const R = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ];
  const s = [pixdim[1], pixdim[2], pixdim[3] * qfac];
  return [
    [R[0][0] * s[0], R[0][1] * s[1], R[0][2] * s[2], qx],
    [R[1][0] * s[0], R[1][1] * s[1], R[1][2] * s[2], qy],
    [R[2][0] * s[0], R[2][1] * s[1], R[2][2] * s[2], qz],
    [0, 0, 0, 1],
  ];
}

/** A PNG/JPEG as values: one grey channel when R = G = B everywhere, else RGB. */
export async function readRaster(blob: Blob): Promise<Plane> {
  const bitmap = await createImageBitmap(blob);
  const { width, height } = bitmap;
  const c = new OffscreenCanvas(width, height);
  const ctx = c.getContext("2d");
  if (!ctx) throw new Error("no 2D canvas");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const n = width * height;
  let grey = true;
  for (let i = 0; i < n && grey; i++) {
    const o = i * 4;
    if (rgba[o] !== rgba[o + 1] || rgba[o] !== rgba[o + 2]) grey = false;
  }
  const channels = grey ? 1 : 3;
  const data = new Float32Array(n * channels);
  for (let i = 0; i < n; i++) {
    const o = i * 4;
    if (grey) data[i] = rgba[o];
    else {
      data[i * 3] = rgba[o];
      data[i * 3 + 1] = rgba[o + 1];
      data[i * 3 + 2] = rgba[o + 2];
    }
  }
  return { width, height, channels, data, affine: null, spatialUnit: "px" };
}

/** Voxel (col, row) to RAS+ mm through the plane's affine. */
export function toWorld(p: Plane, col: number, row: number): [number, number, number] | null {
  const A = p.affine;
  if (!A || p.spatialUnit !== "mm") return null;
  return [0, 1, 2].map((r) => A[r][0] * col + A[r][1] * row + A[r][3]) as [number, number, number];
}

/** Length in the plane's unit (mm, else px) of the step (dcol, drow). */
export function stepLength(p: Plane, dcol: number, drow: number): number {
  const A = p.affine;
  if (!A || p.spatialUnit !== "mm") return Math.hypot(dcol, drow);
  return Math.hypot(A[0][0] * dcol + A[0][1] * drow, A[1][0] * dcol + A[1][1] * drow, A[2][0] * dcol + A[2][1] * drow);
}

/** Area of one pixel in the plane's unit squared. */
export function pixelArea(p: Plane): number {
  const A = p.affine;
  if (!A || p.spatialUnit !== "mm") return 1;
  const u = [A[0][0], A[1][0], A[2][0]];
  const w = [A[0][1], A[1][1], A[2][1]];
  const cross = [u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]];
  return Math.hypot(cross[0], cross[1], cross[2]);
}
