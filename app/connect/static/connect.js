/* The connect pages' one script (no framework, nothing from the internet).
   Every page works without it; it adds the search filter, the logo fallback,
   the copy button and the live status on the result page. */
(function () {
  "use strict";

  function fallback(img) {
    var span = document.createElement("span");
    span.className = "logo initial";
    span.setAttribute("aria-hidden", "true");
    span.textContent = img.getAttribute("data-fallback") || "";
    img.replaceWith(span);
  }

  function logos() {
    document.querySelectorAll("img[data-fallback]").forEach(function (img) {
      if (img.complete && img.naturalWidth === 0) { fallback(img); return; }
      img.addEventListener("error", function () { fallback(img); });
    });
  }

  function search() {
    var input = document.querySelector("[data-search]");
    if (!input) { return; }
    var count = document.querySelector("[data-search-count]");
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      var shown = 0;
      document.querySelectorAll("[data-platform-name]").forEach(function (li) {
        var match = !q || li.getAttribute("data-platform-name").indexOf(q) !== -1;
        li.hidden = !match;
        if (match) { shown += 1; }
      });
      document.querySelectorAll("section[aria-labelledby]").forEach(function (section) {
        section.hidden = !!q && !section.querySelector("[data-platform-name]:not([hidden])");
      });
      if (count) { count.textContent = q ? shown + " / " + document.querySelectorAll("[data-platform-name]").length : ""; }
    });
  }

  function copy() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        field.select();
        var done = function () { button.textContent = button.getAttribute("data-copied"); };
        if (navigator.clipboard) {
          navigator.clipboard.writeText(field.value).then(done, function () {
            document.execCommand("copy"); done();
          });
        } else { document.execCommand("copy"); done(); }
      });
    });
  }

  function status() {
    var box = document.querySelector("[data-status-url]");
    if (!box) { return; }
    var text = box.querySelector("[data-status-text]");
    var url = box.getAttribute("data-status-url");
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (s && s.label && text.textContent !== s.label) { text.textContent = s.label; }
          if (s && s.ready) { box.classList.add("ready"); box.setAttribute("data-state", "ready"); return; }
          window.setTimeout(poll, 2000);
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    logos(); search(); copy(); status();
  });
}());
