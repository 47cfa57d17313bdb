"""What the plate page shows, read from the page itself in a :class:`~hcsgraph.dashboard.browser.Browser`.

The wells' table is the page's own Bokeh data source (``plate-wells``); a hover is a real mouse
move over the well's circle, and its text is read from the tooltip the page draws.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hcsgraph.dashboard.browser import Browser, BrowserError
from hcsgraph.dashboard.geometry import position
from hcsgraph.dashboard.page import SOURCE_NAME

READY = (
    "window.Bokeh !== undefined && Bokeh.documents.length > 0 && "
    f"Bokeh.documents[0].get_model_by_name('{SOURCE_NAME}') !== null && "
    f"Bokeh.documents[0].get_model_by_name('{SOURCE_NAME}').data.well.length > 0"
)

_WELLS = f"""(() => {{
  const data = Bokeh.documents[0].get_model_by_name('{SOURCE_NAME}').data;
  const out = {{}};
  for (let i = 0; i < data.well.length; i++) {{
    if (data.state[i] === 'empty') continue;
    out[data.well[i]] = {{state: data.state[i], planes: data.planes[i], error: data.error[i],
                          value: data.value[i], fill: data.fill[i], worker: data.worker[i]}};
  }}
  return JSON.stringify(out);
}})()"""

_TOOLTIP = """(() => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.classList && el.classList.contains('bk-tooltip-content')) found.push(el.innerText);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found.join('\\n');
})()"""


def open_page(browser: Browser, url: str, timeout: float = 30.0) -> None:
    """Load the plate page and wait until it draws a plate."""
    browser.open(url)
    browser.wait_for(READY, timeout)


def page_wells(browser: Browser) -> dict[str, dict[str, Any]]:
    """Every well the page draws: state, planes, error, value, fill colour, workers."""
    return json.loads(browser.evaluate(_WELLS))


def wait_for_states(browser: Browser, expected: dict[str, str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Poll the page until its wells have exactly the ``expected`` states; returns the wells."""
    deadline = time.monotonic() + timeout
    wells: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        wells = page_wells(browser)
        if {w: v["state"] for w, v in wells.items()} == expected:
            return wells
        time.sleep(0.2)
    shown = {w: v["state"] for w, v in wells.items()}
    raise BrowserError(f"the page shows {shown}, expected {expected}")


def hover(browser: Browser, well: str, timeout: float = 10.0) -> str:
    """Move the mouse over ``well``'s circle; the text of the tooltip the page shows."""
    row, column = position(well)
    where = browser.evaluate(f"""(() => {{
      const plot = Bokeh.documents[0].get_model_by_name('plate');
      const view = Bokeh.index.find_one(plot);
      const box = view.canvas_view.el.getBoundingClientRect();
      return [box.left + view.frame.x_scale.compute({column}), box.top + view.frame.y_scale.compute({row})];
    }})()""")
    browser.move_mouse(where[0] - 3, where[1] - 3)
    browser.move_mouse(where[0], where[1])
    return str(browser.wait_for(f"(() => {{ const t = {_TOOLTIP}; return t.includes('{well}') ? t : ''; }})()",
                                timeout))


def tooltip_shown(browser: Browser, well: str) -> bool:
    """Whether the page shows ``well``'s tooltip right now."""
    return bool(browser.evaluate(f"""(() => {{
      let shown = false;
      const walk = (root) => {{
        for (const el of root.querySelectorAll('.bk-tooltip-content, *')) {{
          if (el.classList && el.classList.contains('bk-tooltip-content') && el.innerText.includes({json.dumps(well)})
              && el.getBoundingClientRect().width > 0) shown = true;
          if (el.shadowRoot) walk(el.shadowRoot);
        }}
      }};
      walk(document);
      return shown;
    }})()"""))


def choose(browser: Browser, select: str, value: str) -> None:
    """Set one of the page's selectors (``run-select``, ``metric-select``) as a user would."""
    browser.evaluate(f"Bokeh.documents[0].get_model_by_name({json.dumps(select)}).value = {json.dumps(value)}")


def options(browser: Browser, select: str) -> list[Any]:
    """The options a selector offers."""
    return json.loads(browser.evaluate(
        f"JSON.stringify(Bokeh.documents[0].get_model_by_name({json.dumps(select)}).options)"))

