// liftoff's dashboard: keeps a page's live part and its run output current from the
// server's event stream. Everything else is plain HTML and forms.
(function () {
  "use strict";
  // Times are sent as times; how long ago is counted here, against the server's clock.
  var skew = Number(document.body.dataset.now || Date.now()) - Date.now();
  function span(s) {
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d";
  }
  function ages() {
    var now = Date.now() + skew;
    document.querySelectorAll("time.ago").forEach(function (t) {
      var s = Math.max(0, Math.round((now - Number(t.getAttribute("datetime"))) / 1000));
      t.textContent = span(s) + " ago";
    });
  }
  ages();
  setInterval(ages, 1000);
  var page = document.body.dataset.live;
  if (!page || !window.EventSource) return;
  var live = document.getElementById("live");
  var log = document.getElementById("log");
  var url = "/events?page=" + encodeURIComponent(page);
  if (log && log.dataset.item) {
    url += "&item=" + encodeURIComponent(log.dataset.item) + "&offset=" + (log.dataset.offset || "0");
    if (log.dataset.run) url += "&run=" + encodeURIComponent(log.dataset.run);
  }
  var source = new EventSource(url);
  source.addEventListener("live", function (e) {
    live.innerHTML = JSON.parse(e.data);
    ages();
    document.body.dataset.updated = String(Date.now());
  });
  source.addEventListener("log", function (e) {
    var atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    log.appendChild(document.createTextNode(JSON.parse(e.data)));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("logreset", function () {
    log.textContent = "";
  });
  source.addEventListener("problem", function (e) {
    var p = document.getElementById("live-problem");
    if (!p) {
      p = document.createElement("p");
      p.id = "live-problem";
      p.className = "error";
      p.setAttribute("role", "alert");
      live.parentNode.insertBefore(p, live);
    }
    p.textContent = JSON.parse(e.data);
  });
  source.onerror = function () {
    document.body.dataset.stream = "reconnecting";
  };
  source.onopen = function () {
    document.body.dataset.stream = "open";
  };
  if (log) log.scrollTop = log.scrollHeight;
})();
