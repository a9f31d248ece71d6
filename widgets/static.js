// The page side of widgets/static.py: brings every kernel-free widget fragment on the page to life.
// Expects window.vegaEmbed (vl-convert's bundle) and, for scrubbers, window.EVX_TRANSCRIPT (the
// transcript anywidget's module); both are inlined in the page before this script.
(() => {
  "use strict";

  // Specs arrive with their datasets stored column by column (static.py's pack_specs).
  function unpack(packed) {
    const datasets = {};
    for (const [name, d] of Object.entries(packed.datasets)) {
      const fields = Object.entries(d.fields);
      const rows = new Array(d.n);
      for (let i = 0; i < d.n; i++) {
        const row = {};
        for (const [field, column] of fields) row[field] = packed.columns[column][i];
        rows[i] = row;
      }
      datasets[name] = rows;
    }
    return packed.specs.map((spec) => {
      const text = JSON.stringify(spec);
      const used = Object.keys(datasets).filter((name) => text.includes(JSON.stringify(name)));
      if (!used.length) return spec;
      return Object.assign({}, spec, { datasets: Object.fromEntries(used.map((n) => [n, datasets[n]])) });
    });
  }

  async function draw(el, spec, options) {
    const result = await window.vegaEmbed(el, spec, Object.assign({ actions: false }, options || {}));
    return result.view;
  }

  // A stand-in for anywidget's model: the same get/set/on/off/save_changes, no kernel behind it.
  function makeModel(initial) {
    const state = Object.assign({}, initial);
    const listeners = {};
    return {
      get: (key) => state[key],
      set: (key, value) => {
        if (state[key] === value) return;
        state[key] = value;
        (listeners["change:" + key] || []).slice().forEach((fn) => fn());
      },
      on: (name, fn) => {
        (listeners[name] = listeners[name] || []).push(fn);
      },
      off: (name, fn) => {
        listeners[name] = (listeners[name] || []).filter((f) => f !== fn);
      },
      save_changes: () => {},
    };
  }

  function signed(v) {
    return v === null || v === undefined || Number.isNaN(v) ? "–" : (v >= 0 ? "+" : "") + v.toFixed(2);
  }

  function paramsWith(spec, values) {
    if (!spec.params) return spec;
    const params = spec.params.map((p) => (p.name in values ? Object.assign({}, p, { value: values[p.name] }) : p));
    return Object.assign({}, spec, { params });
  }

  async function mountScrubber(root, data) {
    const $ = (selector) => root.querySelector(selector);
    const model = makeModel(data.transcript);
    const tokens = model.get("tokens");
    const messages = model.get("messages");
    const starts = messages
      .map((m) => m.first_token)
      .filter((t) => t !== null && t !== undefined)
      .sort((a, b) => a - b);
    const slider = $(".evx-s-position");
    const index = $(".evx-s-index");
    const where = $(".evx-s-where");
    const emotion = $(".evx-s-emotion");
    const layer = $(".evx-s-layer");
    const include = $(".evx-s-include");
    const play = $(".evx-s-play");
    const chartEl = $(".evx-vega");
    const chartNote = $(".evx-s-chart-note");
    const specs = unpack(data.charts);
    const signals = data.signals || {};
    let view = null;
    let chartLayer = data.chart_layers[0];

    function describe() {
      const i = model.get("position");
      const token = tokens[i];
      const values = ((model.get("values") || {})[model.get("emotion")] || {})[String(model.get("layer"))] || [];
      const attempt = token.attempt === null || token.attempt === undefined ? "" : " · attempt " + token.attempt;
      const left = model.get("include_template") === false && token.in_content === false;
      where.textContent =
        `token ${i} · message ${token.message_index + 1}/${data.n_messages} · ${token.role}${attempt}` +
        ` · ${model.get("emotion")} z = ${left ? "– (template token, left out)" : signed(values[i])}`;
      slider.value = String(i);
      index.textContent = String(i);
    }

    function signal(trait) {
      const name = signals[trait];
      if (!view || !name) return;
      view.signal(name, model.get(trait)).runAsync();
    }

    // Another layer's chart, when the page carries it; the chart's own menus keep their choice.
    async function showLayer() {
      const wanted = model.get("layer");
      const at = data.chart_layers.indexOf(wanted);
      chartEl.style.opacity = at < 0 ? "0.35" : "";
      chartNote.textContent = at < 0
        ? `The chart shows layer ${chartLayer}: this page carries the charts of layer ` +
          `${data.chart_layers.join(", ")} only. The transcript shows layer ${wanted}.`
        : "";
      if (at < 0 || wanted === chartLayer) return;
      const values = {};
      if (view) {
        for (const p of specs[at].params || []) {
          try {
            values[p.name] = view.signal(p.name);
          } catch (error) {
            // a param of this layer's chart that the drawn one lacks keeps its saved value
          }
        }
        view.finalize();
      }
      chartLayer = wanted;
      view = await draw(chartEl, paramsWith(specs[at], values), data.options);
    }

    model.on("change:position", () => {
      describe();
      signal("position");
    });
    model.on("change:emotion", () => {
      describe();
      signal("emotion");
    });
    model.on("change:include_template", () => {
      describe();
      signal("include_template");
    });
    model.on("change:layer", () => {
      describe();
      showLayer();
    });
    slider.addEventListener("input", () => model.set("position", Number(slider.value)));
    emotion.addEventListener("change", () => model.set("emotion", emotion.value));
    layer.addEventListener("change", () => model.set("layer", Number(layer.value)));
    if (include) include.addEventListener("change", () => model.set("include_template", include.checked));

    function step(direction) {
      const first = messages[tokens[model.get("position")].message_index].first_token;
      const target = direction < 0 ? starts.filter((s) => s < first).pop() : starts.find((s) => s > first);
      if (target !== undefined) model.set("position", target);
    }
    $(".evx-s-prev").addEventListener("click", () => step(-1));
    $(".evx-s-next").addEventListener("click", () => step(1));

    let timer = null;
    function stop() {
      clearInterval(timer);
      timer = null;
      play.textContent = "▶ play";
    }
    play.addEventListener("click", () => {
      if (timer) return stop();
      if (model.get("position") >= tokens.length - 1) model.set("position", 0);
      play.textContent = "❚❚ pause";
      timer = setInterval(() => {
        const next = model.get("position") + 1;
        if (next >= tokens.length) return stop();
        model.set("position", next);
      }, data.interval || 120);
    });

    window.EVX_TRANSCRIPT.render({ model, el: $(".evx-s-transcript") });
    describe();
    const saved = {};
    for (const [trait, name] of Object.entries(signals)) saved[name] = model.get(trait);
    view = await draw(chartEl, paramsWith(specs[0], saved), data.options);
    // the page may have been scrubbed while the chart was being drawn
    for (const trait of Object.keys(signals)) signal(trait);
  }

  async function mountLayers(root, data) {
    const specs = unpack(data.charts);
    const per = data.per_layer;
    const slots = [...root.querySelectorAll(".evx-vega")];
    const slider = root.querySelector(".evx-a-layer");
    const label = root.querySelector(".evx-a-value");
    const views = new Array(per).fill(null);
    const drawn = new Array(per).fill(null);
    let busy = false;
    let wanted = data.layer;

    async function show() {
      if (busy) return;
      busy = true;
      try {
        while (true) {
          const layer = wanted;
          const at = data.layers.indexOf(layer);
          for (let j = 0; j < per; j++) {
            const spec = specs[at * per + j];
            if (drawn[j] === spec) continue; // an unchanged panel (the human ratings) stays
            if (views[j]) views[j].finalize();
            views[j] = await draw(slots[j], spec, data.options);
            drawn[j] = spec;
          }
          label.textContent = String(layer);
          root.dataset.layer = String(layer);
          if (wanted === layer) break;
        }
      } finally {
        busy = false;
      }
    }
    // identical specs across layers (a panel that does not depend on the layer) share one object
    const keys = specs.map((s) => JSON.stringify(s));
    for (let i = 0; i < specs.length; i++) {
      const first = keys.indexOf(keys[i]);
      if (first !== i) specs[i] = specs[first];
    }
    slider.addEventListener("input", () => {
      wanted = Number(slider.value);
      show();
    });
    await show();
  }

  async function mountChart(root, data) {
    await draw(root.querySelector(".evx-vega"), unpack(data.charts)[0], data.options);
  }

  const MOUNTS = { scrubber: mountScrubber, layers: mountLayers, chart: mountChart };

  for (const root of document.querySelectorAll("[data-evx-kind]")) {
    if (root.dataset.evxMounted) continue;
    root.dataset.evxMounted = "1";
    const script = [...root.children].find((c) => c.classList.contains("evx-static-data"));
    const mount = MOUNTS[root.dataset.evxKind];
    if (!script || !mount) continue;
    mount(root, JSON.parse(script.textContent))
      .then(() => {
        root.dataset.evxReady = "1";
      })
      .catch((error) => {
        root.dataset.evxReady = "error";
        const note = document.createElement("div");
        note.className = "evx-static-note";
        note.textContent = "could not draw this view: " + error;
        root.append(note);
        console.error(error);
      });
  }
})();
