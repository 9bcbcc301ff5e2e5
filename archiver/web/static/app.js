// Evidence Archiver: the little script of the pages (served from /static, no inline
// script anywhere: the CSP forbids it).
// - <time datetime> gets the viewer's local time beside the UTC time the server wrote;
// - a <form data-fetch> is sent with fetch() and the session's CSRF token (from
//   <meta name="csrf-token">) in X-CSRF-Token; the answer (an HTML fragment rendered
//   and escaped by the server) goes into the element named by data-target, or the
//   browser goes where the X-Redirect header says;
// - an element with data-poll="<url>" is replaced by that URL's fragment every second
//   until the fragment no longer carries data-poll (every job or export is final).
"use strict";
(function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (t) {
      var when = new Date(t.getAttribute("datetime"));
      t.setAttribute("data-local", "1");
      if (isNaN(when.getTime())) { return; }
      var span = document.createElement("span");
      span.className = "local";
      span.textContent = " (" + when.toLocaleString() + " your time)";
      t.after(span);
    });
  }

  function polls(root) {
    root.querySelectorAll("[data-poll]:not([data-polling])").forEach(function (el) {
      el.setAttribute("data-polling", "1");
      window.setTimeout(function () { poll(el); }, 1000);
    });
  }

  function enhance(root) { localTimes(root); polls(root); }

  function headers() {
    return { "X-CSRF-Token": csrf(), "X-Requested-With": "fetch" };
  }

  function poll(el) {
    if (!el.isConnected) { return; }
    fetch(el.getAttribute("data-poll"), { headers: headers(), credentials: "same-origin" })
      .then(function (r) {
        var to = r.headers.get("X-Redirect");
        if (to) { window.location.assign(to); return null; }
        // an error (a fragment saying why) replaces the element: the polling stops
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.firstElementChild;
        if (!fresh) { return; }
        el.replaceWith(fresh);
        enhance(fresh.parentNode || document);
      })
      .catch(function () { window.setTimeout(function () { poll(el); }, 3000); });
  }

  function place(form, html) {
    var id = form.getAttribute("data-target");
    var target = id ? document.getElementById(id) : null;
    if (!target) {
      target = document.createElement("div");
      target.setAttribute("aria-live", "polite");
      form.after(target);
    }
    if (form.hasAttribute("data-replace")) {
      var holder = document.createElement(target.tagName === "TR" ? "tbody" : "div");
      holder.innerHTML = html;
      var fresh = holder.firstElementChild;
      if (fresh) { target.replaceWith(fresh); enhance(fresh.parentNode || document); }
      return;
    }
    target.innerHTML = html;
    enhance(target);
    var focus = target.querySelector("[role=alert], [role=status], input, button");
    if (focus && focus.matches("[role=alert], [role=status]")) {
      focus.setAttribute("tabindex", "-1");
      focus.focus();
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-fetch")) { return; }
    event.preventDefault();
    var confirmText = form.getAttribute("data-confirm");
    if (confirmText && !window.confirm(confirmText)) { return; }
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) {
      data.append(event.submitter.name, event.submitter.value);
    }
    var multipart = form.getAttribute("enctype") === "multipart/form-data";
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    form.setAttribute("aria-busy", "true");
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin", headers: headers(),
      body: multipart ? data : new URLSearchParams(data)
    }).then(function (r) {
      var to = r.headers.get("X-Redirect");
      if (to) { window.location.assign(to); return null; }
      return r.text();
    }).then(function (html) {
      if (html !== null) { place(form, html); }
    }).catch(function () {
      place(form, '<p class="error" role="alert">The server could not be reached; try again.</p>');
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
      form.removeAttribute("aria-busy");
    });
  });

  enhance(document);
})();
