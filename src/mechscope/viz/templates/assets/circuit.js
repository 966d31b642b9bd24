(function () {
  "use strict";
  var me = document.currentScript;
  var root = me && me.closest ? me.closest(".mscirc") : null;
  if (!root) { return; }
  var edges = Array.prototype.slice.call(root.querySelectorAll("path.mscirc-edge"));
  var nodes = Array.prototype.slice.call(root.querySelectorAll("g.mscirc-node"));
  var range = root.querySelector("input.mscirc-range");
  var number = root.querySelector("input.mscirc-number");
  var count = root.querySelector(".mscirc-count");
  var readout = root.querySelector(".mscirc-readout");
  var total = edges.length;
  function show(n) {
    n = Math.max(1, Math.min(total, parseInt(n, 10) || 1));
    range.value = n; number.value = n;
    var on = {};
    edges.forEach(function (e) {
      var shown = parseInt(e.getAttribute("data-rank"), 10) < n;
      e.classList.toggle("mscirc-off", !shown);
      if (shown) {
        on[e.getAttribute("data-src")] = true;
        e.getAttribute("data-readers").split(" ").forEach(function (r) { on[r] = true; });
      }
    });
    nodes.forEach(function (g) { g.classList.toggle("mscirc-dim", !on[g.getAttribute("data-node")]); });
    count.textContent = "strongest " + n + " of " + total + " edges drawn";
    root.setAttribute("data-shown", String(n));
  }
  function tip(el) {
    var t = el.querySelector("title");
    readout.textContent = t ? t.textContent : "";
  }
  range.addEventListener("input", function () { show(range.value); });
  number.addEventListener("change", function () { show(number.value); });
  edges.concat(nodes).forEach(function (el) {
    el.addEventListener("mouseenter", function () { tip(el); el.classList.add("mscirc-hover"); });
    el.addEventListener("mouseleave", function () { el.classList.remove("mscirc-hover"); });
  });
  show(range.value);
  root.setAttribute("data-ready", "1");
})();
