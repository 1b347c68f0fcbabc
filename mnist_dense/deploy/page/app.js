// The drawing page: strokes on a canvas, and each network's answer. Under `serve` the drawing goes to POST /predict
// as a PNG data: URL; in the folder `export --format web` writes (its index.html names a manifest of networks), the
// page prepares the drawing and runs the networks itself (networks.js), and nothing leaves the page.
"use strict";

document.getElementById("no-script").remove(); // the script runs: the notice for when it does not goes

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const statusLine = document.getElementById("status");
const answer = document.getElementById("answer");
const asDrawn = document.getElementById("as-drawn");
const CAPTIONS = {
  mnist: "your drawing in 28x28 pixels, cropped to the ink, scaled to fit 20x20 and centred by its mass, as MNIST's digits were made.",
  asDrawn: "your drawing in 28x28 pixels, the whole pad scaled down, the ink where you drew it: not how MNIST's digits were made.",
};
const manifest = document.querySelector('meta[name="mnist-dense-networks"]')?.content;
let drawing = false;
let drawn = false;
let inPage = null; // the networks in the page, once loaded (a promise)

if (manifest) {
  setStatus("Loading the networks...");
  inPage = import("./networks.js").then((module) => module.loadNetworks(new URL(manifest, document.baseURI).href));
  inPage.then(
    (networks) => {
      setStatus("");
      window.mnistDense = networks; // for a console: mnistDense.probabilities(pixels), mnistDense.names
      document.documentElement.dataset.networksLoaded = networks.names.join(" ");
    },
    (error) => setStatus(`The networks could not be loaded: ${error}`, true),
  );
}

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

function position(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

// Pointer events cover the mouse, a pen and a finger alike.
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  drawn = true;
  ink.lineWidth = pad.width / 14; // about MNIST's stroke: 2 pixels of 28
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#000";
  const [x, y] = position(event);
  ink.beginPath();
  ink.moveTo(x, y);
  ink.lineTo(x, y);
  ink.stroke();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = position(event);
  ink.lineTo(x, y);
  ink.stroke();
});

for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    drawing = false;
  });
}

document.getElementById("clear").addEventListener("click", () => {
  ink.clearRect(0, 0, pad.width, pad.height);
  drawn = false;
  answer.hidden = true;
  setStatus("");
});

document.getElementById("predict").addEventListener("click", predict);

// A new choice of preparation asks again for the drawing already answered.
asDrawn.addEventListener("change", () => {
  if (drawn && !answer.hidden) predict();
});

async function predict() {
  if (!drawn) {
    setStatus("Draw a digit first.", true);
    return;
  }
  if (inPage) {
    await answerInPage();
    return;
  }
  setStatus("Asking the network...");
  try {
    // Dark ink on a transparent canvas: the server composites transparency on white, as for any PNG.
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: pad.toDataURL("image/png"), as_drawn: asDrawn.checked }),
    });
    const body = await response.json();
    if (!response.ok) {
      answer.hidden = true;
      setStatus(`The server refused the drawing (${response.status}): ${body.detail}`, true);
      return;
    }
    show(body);
    setStatus("");
  } catch (error) {
    answer.hidden = true;
    setStatus(`No answer from the server: ${error}`, true);
  }
}

async function answerInPage() {
  let networks;
  try {
    networks = await inPage;
  } catch (error) {
    return; // the status already says why
  }
  try {
    const rgba = ink.getImageData(0, 0, pad.width, pad.height).data;
    show(await networks.answer(rgba, pad.width, asDrawn.checked));
    setStatus("");
  } catch (error) {
    answer.hidden = true;
    setStatus(`The drawing cannot be used: ${error.message}`, true);
  }
}

// One network answers {digit, probabilities, ...}; several answer {answers: [{network, digit, ...}, ...]}.
function show(body) {
  const answers = body.answers ?? [body];
  document.getElementById("networks").replaceChildren(...answers.map(networkAnswer));
  document.getElementById("prepared").src = body.prepared;
  const seen = answers.length > 1 ? "What the networks saw" : "What the network saw";
  document.getElementById("caption").textContent = `${seen}: ${asDrawn.checked ? CAPTIONS.asDrawn : CAPTIONS.mnist}`;
  answer.hidden = false;
}

function networkAnswer(answer) {
  const section = document.createElement("section");
  section.className = "network";
  if (answer.network) {
    section.dataset.network = answer.network;
    const name = document.createElement("h2");
    name.textContent = answer.network;
    section.append(name);
  }
  const digit = document.createElement("p");
  digit.className = "digit";
  const value = document.createElement("output");
  value.className = "digit-value";
  value.textContent = answer.digit;
  const probability = document.createElement("span");
  probability.textContent = `(probability ${(100 * answer.probability).toFixed(1)}%)`;
  if (answer.not_a_digit) {
    // calibrate's threshold: the network has not seen anything like this among the digits it learned
    section.dataset.notADigit = "true";
    digit.append("Not a digit, it seems. Asked to name a digit, it would say ", value, " ", probability);
  } else {
    digit.append("It is a ", value, " ", probability);
  }
  const bars = document.createElement("ol");
  bars.className = "bars";
  bars.start = 0;
  bars.replaceChildren(...answer.probabilities.map((p, d) => bar(p, d, d === answer.digit)));
  section.append(digit, bars);
  return section;
}

function bar(p, digit, best) {
  const row = document.createElement("li");
  row.dataset.digit = digit;
  row.dataset.probability = p;
  row.classList.toggle("best", best);
  const label = document.createElement("span");
  label.textContent = digit;
  const fill = document.createElement("span");
  fill.className = "bar";
  fill.style.width = `${100 * p}%`;
  const track = document.createElement("span");
  track.className = "track";
  track.append(fill);
  const shown = document.createElement("span");
  shown.className = "value";
  shown.textContent = `${(100 * p).toFixed(1)}%`;
  row.append(label, track, shown);
  return row;
}
