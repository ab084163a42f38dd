// Refresh a page's live part in place: every element with data-refresh-url is replaced by what
// that URL answers, every data-refresh-seconds (3 by default). No full reload, no library,
// nothing from a CDN. Once an answer holds an element with data-final (a run that ended), that
// element stops refreshing.
(function () {
  for (const root of document.querySelectorAll("[data-refresh-url]")) {
    const url = root.dataset.refreshUrl;
    const every = Number(root.dataset.refreshSeconds || 3) * 1000;
    async function refresh() {
      try {
        const response = await fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}});
        if (response.ok) {
          root.innerHTML = await response.text();
          root.dataset.refreshed = String(Number(root.dataset.refreshed || 0) + 1);
        }
      } catch (error) {
        // The next tick tries again; the page keeps what it showed.
      }
      if (!root.querySelector("[data-final]")) setTimeout(refresh, every);
    }
    setTimeout(refresh, every);
  }
})();
