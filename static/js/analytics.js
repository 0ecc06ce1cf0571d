// The Analytics tab's two small enhancements; the tab works without them (hover values come from the SVG
// <title> elements, the time zone defaults to UTC).
"use strict";
(function () {
  // 1. The viewer's time zone: until one was chosen, preselect the browser's zone and reload once with it.
  var form = document.querySelector("form.analytics-form");
  var select = form && form.querySelector("select[name=tz]");
  if (select) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    var known = zone && Array.prototype.some.call(select.options, function (o) { return o.value === zone; });
    if (known && form.hasAttribute("data-tz-guess")) {
      select.value = zone;
      var url = new URL(window.location.href);
      url.searchParams.set("tz", zone);
      window.location.replace(url.toString());
    }
  }
  // 2. A styled tooltip with a bucket's values (the same text as its <title>).
  var tip = null;
  function hide() { if (tip) { tip.remove(); tip = null; } }
  document.addEventListener("mouseover", function (event) {
    var bucket = event.target.closest && event.target.closest("svg.chart [data-tip]");
    if (!bucket) { hide(); return; }
    var card = bucket.closest(".chart-card");
    if (!card) { return; }
    if (!tip) { tip = document.createElement("div"); tip.className = "chart-tip"; tip.setAttribute("role", "status"); card.appendChild(tip); }
    tip.textContent = bucket.getAttribute("data-tip");
    var box = bucket.getBoundingClientRect();
    var frame = card.getBoundingClientRect();
    var left = box.left - frame.left + box.width / 2 - tip.offsetWidth / 2;
    tip.style.left = Math.max(4, Math.min(left, frame.width - tip.offsetWidth - 4)) + "px";
    tip.style.top = "3rem";
  });
  document.addEventListener("mouseleave", hide);
})();
