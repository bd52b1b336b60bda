// Live refresh for the console's pages (vendored here, no build step): an element with
// data-refresh="N" is fetched again every N seconds and its content swapped in, unless the
// person is typing in a form or the tab is hidden. The response is parsed as an inert document
// (DOMParser runs no scripts) and only our own same-origin page is ever fetched.
(function () {
  "use strict";
  var live = document.querySelector("[data-refresh]");
  if (!live) { return; }
  var seconds = Math.max(2, parseInt(live.getAttribute("data-refresh"), 10) || 10);

  function busy() {
    var active = document.activeElement;
    return document.hidden || (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName));
  }

  function refresh() {
    if (busy()) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("stale"); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
        if (fresh) { live.replaceChildren.apply(live, Array.from(fresh.childNodes)); }
      })
      .catch(function () { /* keep what is shown; try again at the next tick */ });
  }

  window.setInterval(refresh, seconds * 1000);
})();
