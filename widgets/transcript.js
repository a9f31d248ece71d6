// Transcript of an episode: one chat bubble per message, one <span> per token, its background the
// selected emotion's z-score on a blue-white-red scale. Every number arrives once, in `values`;
// a change of position, emotion, layer, scale or include_template only restyles the spans
// already on the page, so scrubbing never waits on the kernel for data.

const NEGATIVE = [33, 102, 172]; // #2166ac
const POSITIVE = [178, 24, 43]; // #b2182b

function isMissing(value) {
  return value === null || value === undefined || Number.isNaN(value);
}

// White at 0, full blue at -scale, full red at +scale; beyond the scale the colour saturates, so
// an attention-sink token of z = 600 looks like any other strong token instead of rescaling all.
function divergingColour(value, scale) {
  if (isMissing(value)) return "transparent";
  const limit = scale > 0 ? scale : 1;
  const t = Math.max(-1, Math.min(1, value / limit));
  const end = t < 0 ? NEGATIVE : POSITIVE;
  const a = Math.abs(t);
  const mixed = end.map((c) => Math.round(255 + (c - 255) * a));
  return `rgb(${mixed[0]}, ${mixed[1]}, ${mixed[2]})`;
}

function formatValue(value) {
  if (isMissing(value)) return "–";
  return (value >= 0 ? "+" : "") + value.toFixed(2);
}

// Whitespace-only tokens would show as nothing in a tooltip; make them visible.
function visibleText(text) {
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥").replace(/ /g, "·");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el }) {
  const root = element("div", "evx-transcript");
  const legend = element("div", "evx-legend");
  const scroller = element("div", "evx-scroll");
  const tip = element("div", "evx-tip");
  tip.style.display = "none";
  root.append(legend, scroller, tip);
  el.append(root);

  let spans = [];
  let current = -1;

  function currentValues(emotion) {
    const byLayer = (model.get("values") || {})[emotion || model.get("emotion")] || {};
    return byLayer[String(model.get("layer"))] || [];
  }

  // Template tokens and the first token (an attention sink) stay uncoloured, and out of the
  // colour limit, unless the user includes them.
  function included(i) {
    const token = (model.get("tokens") || [])[i];
    return model.get("include_template") || (i > 0 && !(token && token.in_content === false));
  }

  function activeScale() {
    const all = model.get("scale_all");
    return model.get("include_template") && all > 0 ? all : model.get("scale");
  }

  function drawLegend() {
    const scale = activeScale();
    legend.replaceChildren(
      element("span", "evx-legend-title", `${model.get("emotion")} · layer ${model.get("layer")} · z`),
      element("span", "evx-legend-tick", `−${scale.toFixed(1)}`),
      element("span", "evx-legend-bar"),
      element("span", "evx-legend-tick", `+${scale.toFixed(1)}`),
      element(
        "span",
        "evx-legend-note",
        model.get("include_template") ? "(clipped beyond)" : "(clipped beyond; template tokens left out)",
      ),
    );
  }

  function recolour() {
    const values = currentValues();
    const scale = activeScale();
    for (let i = 0; i < spans.length; i++) {
      const v = included(i) ? values[i] : null;
      spans[i].style.backgroundColor = divergingColour(v, scale);
      spans[i].classList.toggle("evx-strong", !isMissing(v) && Math.abs(v) > 0.6 * scale);
    }
    drawLegend();
  }

  function scrollToSpan(span) {
    // Scroll the transcript box only: scrollIntoView would also scroll the whole notebook page.
    const box = scroller.getBoundingClientRect();
    const rect = span.getBoundingClientRect();
    if (rect.top < box.top || rect.bottom > box.bottom) {
      scroller.scrollTop += rect.top - box.top - box.height / 2;
    }
  }

  function highlight(scroll = true) {
    if (spans[current]) spans[current].classList.remove("evx-current");
    current = model.get("position");
    const span = spans[current];
    if (!span) return;
    span.classList.add("evx-current");
    if (scroll) scrollToSpan(span);
  }

  function build() {
    const messages = model.get("messages") || [];
    const tokens = model.get("tokens") || [];
    const bodies = [];
    scroller.replaceChildren();
    for (const message of messages) {
      const bubble = element("div", `evx-bubble evx-${message.role}`);
      const header = element("div", "evx-header");
      header.append(element("span", "evx-role", message.role));
      if (!isMissing(message.attempt)) header.append(element("span", "evx-attempt", `attempt ${message.attempt}`));
      if (message.outcome) header.append(element("span", `evx-badge evx-${message.outcome}`, message.outcome));
      const body = element("div", "evx-body");
      bubble.append(header, body);
      scroller.append(bubble);
      bodies[message.index] = body;
    }
    spans = tokens.map((token, i) => {
      const span = element("span", token.in_content === false ? "evx-token evx-meta" : "evx-token", token.text);
      span.dataset.i = String(i);
      const body = bodies[token.message_index] || scroller;
      body.append(span);
      return span;
    });
    current = -1;
    recolour();
    highlight(false);
    // Layout is not known until the element is attached; scroll once it is.
    requestAnimationFrame(() => spans[current] && scrollToSpan(spans[current]));
  }

  function showTip(event) {
    const target = event.target.closest ? event.target.closest(".evx-token") : null;
    if (!target) return;
    const i = Number(target.dataset.i);
    const token = (model.get("tokens") || [])[i];
    if (!token) return;
    const selected = model.get("emotion");
    const rows = (model.get("emotions") || []).map((emotion) => {
      const row = element("tr", emotion === selected ? "evx-selected" : "");
      row.append(element("td", "", emotion), element("td", "evx-num", formatValue(currentValues(emotion)[i])));
      return row;
    });
    const table = element("table");
    table.append(...rows);
    const attempt = isMissing(token.attempt) ? "" : ` · attempt ${token.attempt}`;
    const parts = [
      element("div", "evx-tip-token", `“${visibleText(token.text)}”`),
      element("div", "evx-tip-meta", `token ${i} · ${token.role}${attempt} · layer ${model.get("layer")}`),
      table,
    ];
    if (!included(i)) parts.push(element("div", "evx-tip-meta", "template token: left out of colours and means"));
    tip.replaceChildren(...parts);
    tip.style.display = "block";
    moveTip(event);
  }

  function moveTip(event) {
    tip.style.left = `${event.clientX + 14}px`;
    tip.style.top = `${event.clientY + 14}px`;
  }

  function hideTip() {
    tip.style.display = "none";
  }

  function seek(event) {
    const target = event.target.closest ? event.target.closest(".evx-token") : null;
    if (!target) return;
    model.set("position", Number(target.dataset.i));
    model.save_changes();
  }

  scroller.addEventListener("mouseover", showTip);
  scroller.addEventListener("mousemove", moveTip);
  scroller.addEventListener("mouseleave", hideTip);
  scroller.addEventListener("click", seek);

  const handlers = [
    ["change:position", () => highlight(true)],
    ["change:emotion", recolour],
    ["change:layer", recolour],
    ["change:scale", recolour],
    ["change:scale_all", recolour],
    ["change:include_template", recolour],
    ["change:values", recolour],
    ["change:tokens", build],
    ["change:messages", build],
  ];
  for (const [name, handler] of handlers) model.on(name, handler);
  build();

  return () => {
    for (const [name, handler] of handlers) model.off(name, handler);
  };
}

export default { render, divergingColour };
