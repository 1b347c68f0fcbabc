// The drawing page: strokes on a canvas, POST /predict with the canvas as a PNG data: URL, and the answer shown.
"use strict";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const statusLine = document.getElementById("status");
const answer = document.getElementById("answer");
let drawing = false;
let drawn = false;

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

document.getElementById("predict").addEventListener("click", async () => {
  if (!drawn) {
    setStatus("Draw a digit first.", true);
    return;
  }
  setStatus("Asking the network...");
  try {
    // Dark ink on a transparent canvas: the server composites transparency on white, as for any PNG.
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: pad.toDataURL("image/png") }),
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
});

function show(body) {
  document.getElementById("digit").textContent = body.digit;
  document.getElementById("probability").textContent = `(probability ${(100 * body.probability).toFixed(1)}%)`;
  const bars = document.getElementById("bars");
  bars.replaceChildren(
    ...body.probabilities.map((p, digit) => {
      const row = document.createElement("li");
      row.dataset.digit = digit;
      row.dataset.probability = p;
      row.classList.toggle("best", digit === body.digit);
      const label = document.createElement("span");
      label.textContent = digit;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${100 * p}%`;
      const track = document.createElement("span");
      track.className = "track";
      track.append(bar);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(100 * p).toFixed(1)}%`;
      row.append(label, track, value);
      return row;
    }),
  );
  document.getElementById("prepared").src = body.prepared;
  answer.hidden = false;
}
