"""OptionsView: the JointcalConfig as grouped, validated inputs.

One input per option, grouped as ``jointcal_core.config.CONFIG_SECTIONS``. A value is applied
through ``JointcalConfig.update_from``: when the config refuses it, the message appears under
the input, the input is marked in error and the config keeps its previous value. Changes made
to the config in code (a preset, a loaded file) flow back into the inputs.
"""

from __future__ import annotations

import panel as pn
import panel_material_ui as pmui
import param

from jointcal_core.config import CONFIG_SECTIONS, JointcalConfig
from jointcal_core.exceptions import ConfigError

__all__ = ["OptionsView", "parse_list_text"]


def parse_list_text(text: str, item_type: type) -> list:
    """'a, b' -> ['a', 'b'] (or floats); empty text -> []. Raises ValueError for a bad item."""
    items = [t.strip() for t in (text or "").replace(";", ",").split(",") if t.strip()]
    return [item_type(t) for t in items]


class OptionsView(pn.viewable.Viewer):
    """Grouped inputs for every option of a :class:`JointcalConfig`."""

    config = param.ClassSelector(class_=JointcalConfig)

    def __init__(self, **params):
        super().__init__(**params)
        self._widgets: dict[str, pn.widgets.Widget] = {}
        self._messages: dict[str, pmui.Typography] = {}
        self._syncing = False
        cards = [pmui.Card(*[self._row(name) for name in names], title=section, collapsed=i > 0,
                           sizing_mode="stretch_width", css_classes=[f"options-{section.lower()}"])
                 for i, (section, names) in enumerate(CONFIG_SECTIONS.items())]
        self._layout = pn.Column(*cards, sizing_mode="stretch_width", css_classes=["options-view"])
        self.config.param.watch(self._update_widgets, [n for names in CONFIG_SECTIONS.values() for n in names])

    def __panel__(self):
        return self._layout

    def widget(self, name: str) -> pn.widgets.Widget:
        """The input of option ``name`` (for tests and for composing views)."""
        return self._widgets[name]

    def message(self, name: str) -> str:
        """The validation message shown under option ``name`` ('' when the value was accepted)."""
        return self._messages[name].object

    # --- building -------------------------------------------------------------------------------
    def _row(self, name: str):
        p = self.config.param[name]
        widget = self._make_widget(name, p, self._to_widget(name, getattr(self.config, name)))
        message = pmui.Typography("", variant="caption", color="error", visible=False,
                                  css_classes=["option-error", f"option-error-{name}"])
        widget.param.watch(lambda event, n=name: self._on_edit(n, event.new), "value")
        self._widgets[name], self._messages[name] = widget, message
        return pn.Column(widget, message, margin=0, sizing_mode="stretch_width")

    @staticmethod
    def _make_widget(name: str, p: param.Parameter, value):
        common = dict(label=name, description=p.doc, sizing_mode="stretch_width",
                      css_classes=["option", f"option-{name}"])
        if isinstance(p, param.Boolean):
            return pmui.Switch(value=value, **common)
        if isinstance(p, param.Selector):
            return pmui.Select(value=value, options=list(p.objects), **common)
        if isinstance(p, param.Integer):
            return pmui.IntInput(value=value, **common)
        if isinstance(p, param.Number) and not p.allow_None:
            return pmui.FloatInput(value=value, **common)
        return pmui.TextInput(value=value, **common)

    def _to_widget(self, name: str, value):
        """Config value -> the widget's value (text for lists and optional numbers)."""
        p = self.config.param[name]
        if isinstance(p, param.List):
            return ", ".join(str(v) for v in value)
        if isinstance(p, param.Number) and p.allow_None and not isinstance(p, param.Integer):
            return "" if value is None else repr(value)
        return value

    def _from_widget(self, name: str, value):
        """The widget's value -> a config value (ValueError for text that does not parse)."""
        p = self.config.param[name]
        if isinstance(p, param.List):
            return parse_list_text(value, p.item_type or str)
        if isinstance(p, param.Number) and p.allow_None and not isinstance(p, param.Integer):
            return None if not str(value).strip() else float(value)
        return value

    # --- events --------------------------------------------------------------------------------
    def _on_edit(self, name: str, value) -> None:
        if self._syncing:
            return
        try:
            self.config.update_from({name: self._from_widget(name, value)})
        except ConfigError as exc:
            self._show(name, str(exc))
        except ValueError:
            self._show(name, f"config field '{name}': cannot read {value!r} as a value of this option")
        else:
            self._show(name, "")

    def _show(self, name: str, text: str) -> None:
        message = self._messages[name]
        message.object, message.visible = text, bool(text)
        widget = self._widgets[name]
        if "error_state" in widget.param:
            widget.error_state = bool(text)

    def _update_widgets(self, *events) -> None:
        self._syncing = True
        try:
            for event in events:
                self._widgets[event.name].value = self._to_widget(event.name, event.new)
                self._show(event.name, "")
        finally:
            self._syncing = False
