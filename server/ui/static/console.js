// Shoelace console: follows an appliance's changes. The page long-polls its live endpoint (the
// hub's long-poll, as agents do); when the view changed, or after each wait, it fetches the page
// again and swaps the #live part in. Without JavaScript the page is the same, only static.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !window.fetch || !window.DOMParser) {
    return;
  }
  var url = root.getAttribute("data-live-url");
  var index = root.getAttribute("data-index");
  var backoff = 1000;

  function status(text) {
    var el = document.getElementById("live-status");
    if (el) {
      el.textContent = text;
    }
  }

  // focused describes the element of #live that has the keyboard focus (null if none), so that
  // refocus can give the focus back to its copy in the new content: replacing #live must not
  // send a keyboard user back to the top of the page at each update.
  function focused() {
    var el = document.activeElement;
    if (!el || el === root || !root.contains(el)) {
      return null;
    }
    return {
      tag: el.tagName,
      href: el.getAttribute("href"),
      label: el.getAttribute("aria-label"),
      text: el.textContent,
      index: Array.prototype.indexOf.call(root.getElementsByTagName(el.tagName), el)
    };
  }

  function refocus(f) {
    if (!f) {
      return;
    }
    var all = root.getElementsByTagName(f.tag);
    var el = null;
    for (var i = 0; i < all.length && !el; i++) {
      if (all[i].getAttribute("href") === f.href && all[i].getAttribute("aria-label") === f.label && all[i].textContent === f.text) {
        el = all[i];
      }
    }
    el = el || all[f.index] || root;
    if (el === root) {
      root.setAttribute("tabindex", "-1");
    }
    el.focus({ preventScroll: true });
  }

  // refresh fetches the page and replaces #live with its new content, keeping the
  // <details> the user closed closed.
  function refresh() {
    return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" }).then(function (res) {
      if (res.status === 404 || res.status === 403) {
        // The appliance is gone (its keys deleted): the page says so, as opened again, rather
        // than go on showing what it was.
        ended = true;
        window.location.reload();
        return null;
      }
      if (!res.ok) {
        throw new Error("status " + res.status);
      }
      return res.text();
    }).then(function (html) {
      if (html === null) {
        return new Promise(function () {}); // the page is being loaded again: nothing follows
      }
      var doc = new DOMParser().parseFromString(html, "text/html");
      var next = doc.getElementById("live");
      if (!next) {
        // Signed out meanwhile (the sign-in form came back): show it.
        window.location.reload();
        return;
      }
      var focus = focused();
      var closed = {};
      root.querySelectorAll("details:not([open]) > summary").forEach(function (s) {
        closed[s.textContent] = true;
      });
      root.innerHTML = next.innerHTML;
      root.querySelectorAll("details > summary").forEach(function (s) {
        if (closed[s.textContent]) {
          s.parentNode.removeAttribute("open");
        }
      });
      refocus(focus);
      index = next.getAttribute("data-index") || index;
      root.classList.remove("updated");
      void root.offsetWidth;
      root.classList.add("updated");
    });
  }

  // After a change the agents apply it and report within a moment, which the long-poll (it
  // wakes on the view) does not see: the page is read again 2 s and 8 s after each change, so
  // that its instances follow too, without polling all the time.
  var followUps = [];
  function followUp() {
    followUps.forEach(clearTimeout);
    followUps = [2000, 8000].map(function (ms) {
      return setTimeout(function () {
        refresh().catch(function () {});
      }, ms);
    });
  }

  // Only a page in front follows its appliance: a browser opens at most six HTTP/1.1
  // connections to a server, and each page's long-poll holds one for up to 25 s, so that six
  // appliance tabs made every other page and form wait. A hidden page ends its long-poll
  // (paused) and, back in front, reads itself again and waits again (resume).
  var ctl = null;
  var paused = false;
  var ended = false;

  function resume() {
    if (!paused || ended || document.hidden) {
      return;
    }
    paused = false;
    refresh().then(function () {
      status("Live.");
    }, function () {}).then(poll);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      resume();
    } else if (ctl) {
      ctl.abort();
    }
  });

  function poll() {
    if (ended) {
      return;
    }
    if (document.hidden) {
      paused = true;
      return;
    }
    ctl = window.AbortController ? new AbortController() : null;
    fetch(url + "?index=" + encodeURIComponent(index), { credentials: "same-origin", cache: "no-store", signal: ctl ? ctl.signal : undefined }).then(function (res) {
      if (res.status === 401) {
        ended = true;
        status("Session ended: reload to sign in again.");
        throw null;
      }
      if (!res.ok) {
        throw new Error("status " + res.status);
      }
      return res.json();
    }).then(function (ans) {
      backoff = 1000;
      var changed = ans.changed;
      if (ans.index > index) {
        index = String(ans.index);
      }
      // After a change, and after each quiet wait (instances and rollouts move on their own).
      return refresh().then(function () {
        status(changed ? "Updated " + new Date().toLocaleTimeString() + "." : "Live.");
        if (changed) {
          followUp();
        }
      });
    }).then(poll, function (err) {
      if (err === null) {
        return;
      }
      if (document.hidden || (err && err.name === "AbortError")) {
        paused = true;
        resume(); // in front again already
        return;
      }
      status("Live updates paused; retrying…");
      setTimeout(poll, backoff);
      backoff = Math.min(backoff * 2, 30000);
    });
  }

  status("Live.");
  poll();
})();
