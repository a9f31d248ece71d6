"""EmotionAtlas: the geometry of the emotion vectors at one layer beside human ratings."""

from __future__ import annotations

import logging

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd

from explorer.errors import ExplorerError
from explorer.vectors import EmotionVectors

from ._common import enable_offline_charts

log = logging.getLogger(__name__)
PANEL = 300


def _correlation(a: pd.Series, b: pd.Series) -> float | None:
    both = pd.concat([a, b], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].std() == 0 or both.iloc[:, 1].std() == 0:
        return None
    return float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1])


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


class EmotionAtlas(widgets.VBox):
    """Emotions on the vectors' PC1/PC2 beside human valence/arousal, and their cosine matrix.

    Args:
        vectors: from :func:`explorer.load_vectors`.
        norms: DataFrame indexed by emotion with ``valence`` and ``arousal`` columns; default:
            :func:`explorer.validation.norms_for` (the panel is left out when those norms are not
            installed).
        layer: first layer shown (default: about two-thirds of the way through).
    """

    def __init__(self, vectors: EmotionVectors, norms: pd.DataFrame | None = None, layer: int | None = None):
        if len(vectors.emotions) < 2:
            raise ExplorerError(f"an atlas needs at least two emotions; these vectors have {len(vectors.emotions)}")
        self._norms_source = "given"
        if norms is None:
            norms = _installed_norms(vectors.emotions)
            self._norms_source = "Warriner et al. 2013, 1-9"
        if norms is not None:
            missing = {"valence", "arousal"} - set(norms.columns)
            if missing:
                raise ExplorerError(f"norms need columns valence and arousal; missing: {', '.join(sorted(missing))}")
            norms = norms.loc[[e for e in vectors.emotions if e in norms.index], ["valence", "arousal"]]
            norms = norms if len(norms) else None
        self.vectors = vectors
        self.norms = norms
        if layer is None:
            layer = round(2 * vectors.n_layers / 3)
        layer = min(max(int(layer), 0), vectors.n_layers - 1)

        enable_offline_charts()
        self.layer_slider = widgets.IntSlider(
            value=layer, min=0, max=vectors.n_layers - 1, description="layer", continuous_update=False
        )
        self.pca_chart = alt.JupyterChart(self._pca_chart(layer))
        self.norms_chart = alt.JupyterChart(self._norms_chart()) if norms is not None else None
        self.cosine_chart = alt.JupyterChart(self._cosine_chart(layer))
        self.layer_slider.observe(self._on_layer, "value")
        top = [self.pca_chart] + ([self.norms_chart] if self.norms_chart is not None else [])
        note = (
            []
            if norms is not None
            else [widgets.HTML("<i>human valence/arousal norms not available; that panel is left out</i>")]
        )
        super().__init__(children=[self.layer_slider, widgets.HBox(top), *note, self.cosine_chart])

    @property
    def layer(self) -> int:
        return int(self.layer_slider.value)

    def _on_layer(self, change) -> None:
        self.pca_chart.chart = self._pca_chart(change["new"])
        self.cosine_chart.chart = self._cosine_chart(change["new"])

    def pca_data(self, layer: int) -> tuple[pd.DataFrame, np.ndarray]:
        """PC1/PC2 scores per emotion at ``layer`` (with valence/arousal when known) and the
        fraction of variance each component explains."""
        scores, explained = self.vectors.pca(layer)
        frame = scores.rename_axis("emotion").reset_index()
        if self.norms is not None:
            frame = frame.merge(self.norms, left_on="emotion", right_index=True, how="left")
        return frame, explained

    def _pca_chart(self, layer: int) -> alt.LayerChart:
        frame, explained = self.pca_data(layer)
        title = f"layer {layer}: PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%} of variance"
        subtitle = []
        if self.norms is not None:
            scores = frame.set_index("emotion")
            r_v = _correlation(scores["pc1"], scores["valence"])
            r_a = _correlation(scores["pc2"], scores["arousal"])
            subtitle = [f"r(PC1, valence) = {_signed(r_v)} · r(PC2, arousal) = {_signed(r_a)}"]
        base = alt.Chart(frame).encode(
            # padding keeps the labels of the outermost emotions inside the plot
            x=alt.X("pc1:Q", title="PC1", scale=alt.Scale(padding=40)),
            y=alt.Y("pc2:Q", title="PC2", scale=alt.Scale(padding=12)),
            tooltip=["emotion:N", alt.Tooltip("pc1:Q", format=".3f"), alt.Tooltip("pc2:Q", format=".3f")],
        )
        if self.norms is not None:
            # Coloured by human valence, so a PC1 that tracks valence shows as a left-right gradient.
            points = base.mark_circle(size=70).encode(
                color=alt.Color("valence:Q", scale=alt.Scale(scheme="redblue"), legend=alt.Legend(title="valence"))
            )
        else:
            points = base.mark_circle(size=70, color="#4c78a8")
        labels = base.mark_text(align="left", dx=6, fontSize=11).encode(text="emotion:N")
        return alt.layer(points, labels).properties(
            width=PANEL, height=PANEL, title=alt.Title(title, subtitle=subtitle)
        )

    def _norms_chart(self) -> alt.LayerChart:
        frame = self.norms.rename_axis("emotion").reset_index()
        base = alt.Chart(frame).encode(
            x=alt.X("valence:Q", scale=alt.Scale(zero=False, padding=40)),
            y=alt.Y("arousal:Q", scale=alt.Scale(zero=False, padding=12)),
            tooltip=["emotion:N", "valence:Q", "arousal:Q"],
        )
        points = base.mark_circle(size=70, color="#72b7b2")
        labels = base.mark_text(align="left", dx=6, fontSize=11).encode(text="emotion:N")
        return alt.layer(points, labels).properties(
            width=PANEL, height=PANEL, title=alt.Title("human ratings", subtitle=[self._norms_source])
        )

    def cosine_data(self, layer: int) -> pd.DataFrame:
        """Long-format cosine similarities between every pair of emotions at ``layer``."""
        matrix = self.vectors.cosine_matrix(layer)
        long = matrix.rename_axis("a").reset_index().melt("a", var_name="b", value_name="cosine")
        long["cosine"] = long["cosine"].astype(float).round(3)
        return long

    def _cosine_chart(self, layer: int) -> alt.LayerChart:
        # Ordered by PC1 so that emotions pointing the same way form visible blocks.
        scores, _ = self.vectors.pca(layer)
        order = scores.sort_values("pc1").index.tolist()
        frame = self.cosine_data(layer)
        size = max(PANEL, 22 * len(order))
        base = alt.Chart(frame).encode(
            x=alt.X("a:N", sort=order, title=None),
            y=alt.Y("b:N", sort=order, title=None),
        )
        cells = base.mark_rect().encode(
            color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
            tooltip=["a:N", "b:N", alt.Tooltip("cosine:Q", format="+.2f")],
        )
        chart = cells
        if len(order) <= 12:
            text = base.mark_text(fontSize=9).encode(
                text=alt.Text("cosine:Q", format=".2f"),
                color=alt.condition("abs(datum.cosine) > 0.6", alt.value("white"), alt.value("#222")),
            )
            chart = alt.layer(cells, text)
        return chart.properties(width=size, height=size, title=f"cosine similarity, layer {layer}")


def _installed_norms(emotions: list[str]) -> pd.DataFrame | None:
    try:
        from explorer.validation import norms_for

        return norms_for(list(emotions))
    except ExplorerError as exc:
        log.info("no valence/arousal panel: %s", exc)
        return None
