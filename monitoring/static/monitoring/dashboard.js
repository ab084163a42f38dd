// Refresh the dashboard's fragment in place: no full reload, no library, nothing from a CDN.
(function () {
  const root = document.getElementById("ballast-dashboard");
  if (!root) return;
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
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
