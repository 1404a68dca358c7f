// Live refresh of a run page: while the run is RUNNING, poll its JSON and swap in the
// new figures and charts; reload once when it ends, to show the registered version.
(function () {
  "use strict";
  const summary = document.getElementById("summary");
  if (!summary || summary.dataset.running !== "true") return;
  const url = "/api/runs/" + encodeURIComponent(summary.dataset.runId);
  const every = Number(summary.dataset.refreshMs) || 2000;

  function apply(view) {
    for (const [name, text] of Object.entries(view.fields)) {
      for (const el of document.querySelectorAll('[data-field="' + name + '"]')) {
        if (el.textContent !== text) el.textContent = text;
      }
    }
    for (const [name, svg] of Object.entries(view.charts)) {
      const el = document.querySelector('[data-chart="' + name + '"]');
      if (el) el.innerHTML = svg;
    }
  }

  async function poll() {
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (response.ok) {
        const view = await response.json();
        apply(view);
        if (!view.running) {
          window.location.reload();
          return;
        }
      }
    } catch (err) {
      document.getElementById("live").textContent = "Live: server unreachable, retrying.";
    }
    window.setTimeout(poll, every);
  }
  window.setTimeout(poll, every);
})();
