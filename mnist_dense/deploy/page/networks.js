// The networks inside the page, for the folder `export --format web` writes: onnxruntime-web runs each exported
// .onnx file (WebAssembly, one thread) on the picture prepare.js makes, and the answer has the form of serve's JSON.
// Everything comes from the page's own folder; nothing is sent anywhere.
"use strict";

import * as ort from "./ort/ort.wasm.bundle.min.mjs";
import { SIZE, grayOnWhite, prepareAsDrawn, prepareDigit } from "./prepare.js";

const INPUT = "images";
const OUTPUT = "probabilities";
const SCORE = "not_a_digit_score";

// The manifest export writes: {"runtime": "...", "networks": [{"name", "file", "threshold"}, ...]}; a threshold is
// calibrate's "not a digit" threshold on the score (null without one).
export async function loadNetworks(manifestUrl) {
  ort.env.wasm.numThreads = 1; // several threads need cross-origin isolation, which a static host does not give
  // The loader is in the bundle; only the WebAssembly file is fetched, from the page's folder.
  ort.env.wasm.wasmPaths = { wasm: new URL("./ort/ort-wasm-simd-threaded.wasm", import.meta.url).href };
  const manifest = await (await fetch(manifestUrl)).json();
  const sessions = await Promise.all(
    manifest.networks.map((network) => ort.InferenceSession.create(new URL(network.file, manifestUrl).href)),
  );
  const names = manifest.networks.map((network) => network.name);

  // (N*784) pixels 0-255, white digit on black -> for each network, its outputs: (N*10) probabilities, (N) scores.
  async function outputs(pixels) {
    const count = pixels.length / (SIZE * SIZE);
    const images = new ort.Tensor("float32", Float32Array.from(pixels), [count, 1, SIZE, SIZE]);
    return Promise.all(sessions.map((session) => session.run({ [INPUT]: images })));
  }

  async function probabilities(pixels) {
    return (await outputs(pixels)).map((each) => each[OUTPUT].data);
  }

  // The pad's RGBA -> serve's answer: {digit, probability, probabilities, score, not_a_digit, prepared} for one,
  // {answers: [{network, ...}], prepared} for several; probabilities rounded to 6 places as serve rounds them.
  async function answer(rgba, side, asDrawn) {
    const gray = grayOnWhite(rgba);
    const digit = asDrawn ? prepareAsDrawn(gray, side) : prepareDigit(gray, side, side);
    const answers = (await outputs(digit)).map((each, i) => {
      const found = each[OUTPUT].data;
      const best = found.indexOf(Math.max(...found));
      const rounded = Array.from(found, (p) => Math.round(p * 1e6) / 1e6);
      const score = each[SCORE].data[0];
      const threshold = manifest.networks[i].threshold;
      const notADigit = threshold === null || threshold === undefined ? null : score > threshold;
      const decision = { score: Math.round(score * 1e4) / 1e4, not_a_digit: notADigit };
      return { network: names[i], digit: best, probability: rounded[best], probabilities: rounded, ...decision };
    });
    const prepared = picture(digit);
    if (answers.length === 1) {
      delete answers[0].network;
      return { ...answers[0], prepared };
    }
    return { answers, prepared };
  }

  return { names, runtime: manifest.runtime, probabilities, answer };
}

// 28x28 gray bytes -> a PNG data: URL, white ink on black, as serve sends the picture the networks saw.
function picture(digit) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIZE;
  const context = canvas.getContext("2d");
  const image = context.createImageData(SIZE, SIZE);
  digit.forEach((value, i) => image.data.set([value, value, value, 255], 4 * i));
  context.putImageData(image, 0, 0);
  return canvas.toDataURL("image/png");
}
