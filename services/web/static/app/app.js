// Guiju's few lines of page behaviour; every page works without them (links and form posts).
(function () {
  "use strict";

  // A field marked data-detect-timezone takes the browser's time zone when it is still empty.
  function detectTimezone(root) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    root.querySelectorAll("[data-detect-timezone]").forEach(function (input) {
      if (!input.value && zone) { input.value = zone; }
      var shown = document.getElementById(input.getAttribute("data-detect-timezone"));
      if (shown && input.value) { shown.textContent = input.value; }
    });
  }

  // Show or hide a password: a button with data-toggle-password="<input id>".
  function passwordToggles(root) {
    root.querySelectorAll("[data-toggle-password]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var input = document.getElementById(button.getAttribute("data-toggle-password"));
        var show = input.type === "password";
        input.type = show ? "text" : "password";
        button.setAttribute("aria-pressed", show ? "true" : "false");
      });
    });
  }

  // An error summary or a saved notice takes the focus, so that it is read out first.
  function focusFirstNotice(root) {
    var target = root.querySelector(".error-summary, [data-take-focus]");
    if (target) { target.setAttribute("tabindex", "-1"); target.focus(); }
  }

  // A form is sent once: its submit buttons wait (with their "saving" words) until the answer.
  function noDoubleSubmit(root) {
    root.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.sending === "1") { event.preventDefault(); return; }
        form.dataset.sending = "1";
        var busy = form.getAttribute("data-busy");
        form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (button) {
          if (busy && button === event.submitter) { button.textContent = busy; }
          button.setAttribute("aria-disabled", "true");
        });
      });
    });
  }

  function enhance(root) {
    detectTimezone(root);
    passwordToggles(root);
    noDoubleSubmit(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    focusFirstNotice(document);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    enhance(event.detail.target);
    focusFirstNotice(event.detail.target);
  });
  // The session's CSRF token rides along on every htmx request.
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.getAttribute("content"); }
  });
})();

// Live counts (the bell): every element marked data-poll gets a "poll" event each minute while the
// page is seen, and at once when it is seen again; htmx fetches and swaps it.
(function () {
  "use strict";
  var PERIOD = 60000;
  function poll() {
    if (document.visibilityState !== "visible" || !window.htmx) { return; }
    document.querySelectorAll("[data-poll]").forEach(function (element) { window.htmx.trigger(element, "poll"); });
  }
  setInterval(poll, PERIOD);
  document.addEventListener("visibilitychange", poll);
})();
