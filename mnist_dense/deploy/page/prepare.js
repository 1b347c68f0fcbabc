// The 28x28 picture a network sees, made in the page exactly as `mnist_dense.pictures.prepare_picture` makes it in
// Python from the canvas' PNG: composited on white paper as Pillow does, inverted to white ink on black, contrast
// stretched, cropped to the ink, scaled to fit 20x20 with torch's antialiased bilinear filter, framed in 28x28 and
// shifted so that its centre of mass is the centre ("as drawn": the whole pad scaled to 28x28 instead).
// Arithmetic is in float32 (Math.fround) and rounding half to even, as torch and Python round; the filter's sums
// are fused multiply-adds (one rounding each), as torch's CPU kernel compiles them on x86-64.
"use strict";

export const SIZE = 28;
const DIGIT_BOX = 20;
const INK_LEVEL = Math.fround(0.2);
const f32 = Math.fround;

export class PictureError extends Error {}

// Python's round() and torch.round(): halves go to the even neighbour.
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// RGBA bytes (as canvas getImageData gives them) -> gray 0-255 on white paper: Pillow's alpha_composite on opaque
// white, then its RGB -> L conversion, both in Pillow's integer arithmetic.
export function grayOnWhite(rgba) {
  const gray = new Float32Array(rgba.length / 4);
  for (let i = 0; i < gray.length; i++) {
    const [r, g, b, a] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], rgba[4 * i + 3]];
    let [or, og, ob] = [255, 255, 255];
    if (a !== 0) {
      const coef1 = Math.floor((a * 255 * 255 * 128) / (a * 255 + 255 * (255 - a)));
      const coef2 = 255 * 128 - coef1;
      const div255 = (v) => ((v >>> 8) + v) >>> 8;
      [or, og, ob] = [r, g, b].map((c) => div255(c * coef1 + 255 * coef2 + (0x80 << 7)) >>> 7);
    }
    gray[i] = (or * 19595 + og * 38470 + ob * 7471 + 0x8000) >>> 16;
  }
  return gray;
}

// gray (H*W) -> float32 in [0, 1], white ink on black, paper at 0 (pictures.ink_on_black).
function inkOnBlack(gray, width, height) {
  const border = [];
  for (let x = 0; x < width; x++) border.push(gray[x], gray[(height - 1) * width + x]);
  for (let y = 0; y < height; y++) border.push(gray[y * width], gray[y * width + width - 1]);
  border.sort((p, q) => p - q);
  let paper = border[(border.length - 1) >> 1]; // torch.median: the lower of the two middle values
  const invert = paper > 127;
  if (invert) paper = 255 - paper;
  const x = new Float32Array(gray.length);
  let most = 0;
  for (let i = 0; i < gray.length; i++) {
    x[i] = Math.max((invert ? 255 - gray[i] : gray[i]) - paper, 0);
    most = Math.max(most, x[i]);
  }
  if (most <= 0) throw new PictureError("no ink found: the picture is one flat colour");
  for (let i = 0; i < x.length; i++) x[i] = f32(x[i] / most);
  return x;
}

// torch's antialiased bilinear weights along one axis (align_corners=False), as its CPU kernel computes them: float32
// variables, C++'s double literals (0.5, 1.0) widening an expression until it is stored.
function weights(inSize, outSize) {
  const scale = f32(inSize / outSize);
  const support = scale >= 1 ? scale : 1;
  const invscale = scale >= 1 ? f32(1 / scale) : 1;
  const rows = [];
  for (let i = 0; i < outSize; i++) {
    const center = f32(scale * (i + 0.5));
    const first = Math.max(Math.trunc(f32(center - support) + 0.5), 0);
    const count = Math.min(Math.trunc(f32(center + support) + 0.5), inSize) - first;
    const w = [];
    let total = 0;
    for (let j = 0; j < count; j++) {
      const t = Math.abs(f32((f32(j + first - center) + 0.5) * invscale));
      w.push(t < 1 ? f32(1 - t) : 0);
      total = f32(total + w[j]);
    }
    rows.push({ first, w: total !== 0 ? w.map((v) => f32(v / total)) : w });
  }
  return rows;
}

// w * v + sum rounded once to float32 (a product of two float32 is exact in a double); the first term alone.
function fusedMultiplyAdd(w, v, sum, j) {
  return j === 0 ? f32(w * v) : f32(w * v + sum);
}

// (height x width) float32 -> (outHeight x outWidth): the width first, then the height, as torch does.
function resize(x, width, height, outWidth, outHeight) {
  const across = weights(width, outWidth);
  const wide = new Float32Array(height * outWidth);
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < outWidth; i++) {
      let sum = 0;
      across[i].w.forEach((w, j) => (sum = fusedMultiplyAdd(w, x[y * width + across[i].first + j], sum, j)));
      wide[y * outWidth + i] = sum;
    }
  }
  const down = weights(height, outHeight);
  const out = new Float32Array(outHeight * outWidth);
  for (let i = 0; i < outHeight; i++) {
    for (let c = 0; c < outWidth; c++) {
      let sum = 0;
      down[i].w.forEach((w, j) => (sum = fusedMultiplyAdd(w, wide[(down[i].first + j) * outWidth + c], sum, j)));
      out[i * outWidth + c] = Math.min(Math.max(sum, 0), 1);
    }
  }
  return out;
}

function toBytes(x) {
  return Uint8Array.from(x, (v) => roundHalfEven(f32(v * 255)));
}

function inkVanishes(scaling) {
  return new PictureError(
    `no ink is left when ${scaling}: the strokes are too thin or too faint for the size of the picture;` +
      " draw them thicker, or crop the picture closer to the digit",
  );
}

// Shift by whole pixels so that the centre of mass is the image centre (pictures.center_by_mass).
function centreByMass(digit) {
  let total = 0;
  let rows = 0;
  let cols = 0;
  for (let i = 0; i < digit.length; i++) {
    total += digit[i];
    rows += digit[i] * Math.floor(i / SIZE);
    cols += digit[i] * (i % SIZE);
  }
  const centre = (SIZE - 1) / 2;
  const down = roundHalfEven(f32(centre - f32(rows / total)));
  const right = roundHalfEven(f32(centre - f32(cols / total)));
  const shifted = new Uint8Array(SIZE * SIZE);
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const [fromY, fromX] = [y - down, x - right];
      if (fromY >= 0 && fromY < SIZE && fromX >= 0 && fromX < SIZE) shifted[y * SIZE + x] = digit[fromY * SIZE + fromX];
    }
  }
  return shifted;
}

// gray (H*W, 0-255) of one digit -> an MNIST-like 28x28 (pictures.prepare_digit).
export function prepareDigit(gray, width, height) {
  const x = inkOnBlack(gray, width, height);
  let [top, bottom, left, right] = [height, -1, width, -1];
  for (let y = 0; y < height; y++) {
    for (let c = 0; c < width; c++) {
      if (x[y * width + c] > INK_LEVEL) {
        [top, bottom] = [Math.min(top, y), Math.max(bottom, y)];
        [left, right] = [Math.min(left, c), Math.max(right, c)];
      }
    }
  }
  const [inkHeight, inkWidth] = [bottom - top + 1, right - left + 1];
  const crop = new Float32Array(inkHeight * inkWidth);
  for (let y = 0; y < inkHeight; y++) crop.set(x.subarray((top + y) * width + left, (top + y) * width + right + 1), y * inkWidth);
  const scale = DIGIT_BOX / Math.max(inkHeight, inkWidth);
  const [h, w] = [Math.max(1, roundHalfEven(inkHeight * scale)), Math.max(1, roundHalfEven(inkWidth * scale))];
  const scaled = resize(crop, inkWidth, inkHeight, w, h);
  const canvas = new Float32Array(SIZE * SIZE);
  const [down, across] = [(SIZE - h) >> 1, (SIZE - w) >> 1];
  for (let y = 0; y < h; y++) canvas.set(scaled.subarray(y * w, (y + 1) * w), (down + y) * SIZE + across);
  const digit = toBytes(canvas);
  if (!digit.some((v) => v > 0)) throw inkVanishes(`the ${inkWidth}x${inkHeight} pixels the ink spans are scaled to fit 20x20`);
  return centreByMass(digit);
}

// The whole square picture scaled to 28x28 as it lies, ink where it was drawn (pictures.prepare_as_drawn).
export function prepareAsDrawn(gray, side) {
  const digit = toBytes(resize(inkOnBlack(gray, side, side), side, side, SIZE, SIZE));
  if (!digit.some((v) => v > 0)) throw inkVanishes(`the ${side}x${side} picture is scaled to 28x28`);
  return digit;
}
