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

  // Copy a value (a secret, an id): a button with data-copy="<id of the element holding it>",
  // hidden without scripts (the value stays there to select), says data-copied once done.
  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = button.getAttribute("data-copied");
        });
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
          if (busy && button === event.submitter) {
            button.dataset.label = button.textContent;
            button.textContent = busy;
          }
          button.setAttribute("aria-disabled", "true");
        });
      });
    });
  }

  // A form whose htmx request failed (no answer, or one not shown) can be sent again.
  function releaseForm(form) {
    if (!form || form.tagName !== "FORM") { return; }
    delete form.dataset.sending;
    form.querySelectorAll("[aria-disabled=true]").forEach(function (button) {
      button.removeAttribute("aria-disabled");
      if (button.dataset.label) { button.textContent = button.dataset.label; }
    });
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // ---------------------------------------------------------------- type-ahead (user, record)
  // [data-typeahead="<field id>"] holds the form's plain select (the value, and the choice without
  // scripts) and a hidden search box whose htmx search lists matches as buttons; a button marked
  // data-pick-for="<field id>" picks its data-value. The search box takes the field's id, so its
  // label and the error summary's link lead to it.
  function typeaheads(root) {
    root.querySelectorAll("[data-typeahead]").forEach(function (wrapper) {
      if (wrapper.dataset.ready) { return; }
      wrapper.dataset.ready = "1";
      var id = wrapper.getAttribute("data-typeahead");
      var select = wrapper.querySelector("select");
      var box = wrapper.querySelector("[data-typeahead-box]");
      var search = box.querySelector("input[type=search]");
      select.id = id + "-value";
      select.hidden = true;
      search.id = id;
      box.hidden = false;
      search.addEventListener("keydown", function (event) {
        if (event.key === "Enter") {  // search now; never send the step's form from here
          event.preventDefault();
          if (window.htmx) { window.htmx.trigger(search, "search"); }
        }
      });
    });
  }

  function pick(button) {
    var id = button.getAttribute("data-pick-for");
    var wrapper = document.querySelector('[data-typeahead="' + id + '"]');
    if (!wrapper) { return; }
    var select = wrapper.querySelector("select");
    var value = button.getAttribute("data-value");
    var label = button.getAttribute("data-label");
    var option = Array.prototype.find.call(select.options, function (o) { return o.value === value; });
    if (!option) {
      option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      select.appendChild(option);
    }
    select.value = value;
    var picked = document.getElementById(id + "-picked");
    if (picked) { picked.textContent = (wrapper.getAttribute("data-chosen") || "{name}").replace("{name}", label); }
    var results = document.getElementById(id + "-results");
    if (results) { results.textContent = ""; }
    var search = document.getElementById(id);
    if (search) { search.value = ""; search.focus(); }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-pick-for]");
    if (button) { event.preventDefault(); pick(button); }
  });

  // ---------------------------------------------------------------- uploads (photos, files)
  // [data-uploader="<address>"] takes the files its input is given one by one: a photo is made at
  // most 1600 px on its long side (JPEG) in the browser, shown as a thumbnail, and sent on its own
  // with a progress bar; a failed one offers a retry. Each stored file rides with the form as
  // <name>_kept; the input is emptied, so the form never sends the full-size photos again.
  var LONG_SIDE = 1600;

  function downscale(file) {
    var raster = /^image\/(jpeg|png|webp|bmp)$/.test(file.type);
    if (!raster || !window.createImageBitmap) { return Promise.resolve(file); }
    return window.createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var scale = Math.min(1, LONG_SIDE / Math.max(bitmap.width, bitmap.height));
      if (scale === 1 && file.type === "image/jpeg") { bitmap.close(); return file; }
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) {
          if (!blob) { resolve(file); return; }
          var name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
          resolve(new File([blob], name, { type: "image/jpeg" }));
        }, "image/jpeg", 0.85);
      });
    }).catch(function () { return file; });
  }

  function uploadItem(uploader, file) {
    var li = document.createElement("li");
    li.className = "thumb";
    var img = document.createElement("img");
    img.alt = "";
    img.width = 64;
    img.height = 64;
    var text = document.createElement("span");
    text.className = "thumb-text";
    var name = document.createElement("span");
    name.className = "thumb-name";
    name.textContent = file.name;
    var progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", file.name);
    var status = document.createElement("span");
    status.className = "thumb-status";
    status.setAttribute("role", "status");
    var retry = document.createElement("button");
    retry.type = "button";
    retry.className = "secondary";
    retry.textContent = uploader.getAttribute("data-retry");
    retry.hidden = true;
    text.append(name, progress, status);
    li.append(img, text, retry);
    uploader.querySelector("[data-thumbs]").appendChild(li);
    return { li: li, img: img, progress: progress, status: status, retry: retry, file: file };
  }

  function send(uploader, item) {
    var words = function (key) { return uploader.getAttribute("data-" + key); };
    item.li.dataset.state = "uploading";
    item.status.textContent = words("uploading");
    item.retry.hidden = true;
    item.progress.hidden = false;
    item.progress.value = 0;
    var failed = function () {
      item.li.dataset.state = "failed";
      item.status.textContent = words("failed");
      item.progress.hidden = true;
      item.retry.hidden = false;
      uploadSettled(uploader);
    };
    var xhr = new XMLHttpRequest();
    xhr.open("POST", uploader.getAttribute("data-uploader"));
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) { item.progress.value = Math.round((event.loaded * 100) / event.total); }
    });
    xhr.addEventListener("load", function () {
      var answer = null;
      try { answer = xhr.status === 201 ? JSON.parse(xhr.responseText) : null; } catch (e) { answer = null; }
      if (!answer || !answer.id) { failed(); return; }
      var kept = document.createElement("input");
      kept.type = "hidden";
      kept.name = uploader.getAttribute("data-name") + "_kept";
      kept.value = answer.id;
      item.li.appendChild(kept);
      item.li.dataset.state = "done";
      item.progress.value = 100;
      item.progress.hidden = true;
      item.status.textContent = words("uploaded");
      if (answer.thumbnail) {  // the server's small copy: the full photo's memory is let go
        URL.revokeObjectURL(item.img.src);
        item.img.src = answer.thumbnail;
      }
      uploadSettled(uploader);
    });
    xhr.addEventListener("error", failed);
    xhr.addEventListener("abort", failed);
    var body = new FormData();
    body.append("file", item.blob, item.blob.name || item.file.name);
    xhr.send(body);
  }

  function uploaders(root) {
    root.querySelectorAll("[data-uploader]").forEach(function (uploader) {
      if (uploader.dataset.ready) { return; }
      uploader.dataset.ready = "1";
      var input = uploader.querySelector("input[type=file]");
      input.removeAttribute("required");
      input.addEventListener("change", function () {
        var chosen = Array.prototype.slice.call(input.files || []);
        input.value = "";
        chosen.forEach(function (file) {
          var item = uploadItem(uploader, file);
          item.li.dataset.state = "uploading";
          item.retry.addEventListener("click", function () { send(uploader, item); });
          var prepared = uploader.getAttribute("data-downscale") === "yes" ? downscale(file) : Promise.resolve(file);
          prepared.then(function (blob) {
            item.blob = blob;
            if (/^image\//.test(blob.type)) { item.img.src = URL.createObjectURL(blob); }
            send(uploader, item);
          });
        });
      });
    });
  }

  // A form sent while a file is still on its way waits for it (the person is told), then goes by
  // itself; when a file fails meanwhile, it stays, with its retry, until it is sent again.
  var waiting = new WeakMap();  // form → the button that sent it

  function uploading(form) {
    return form.querySelector('[data-uploader] .thumb[data-state="uploading"]');
  }

  function uploadSettled(uploader) {
    var form = uploader.closest("form");
    if (!form || !waiting.has(form) || uploading(form)) { return; }
    var submitter = waiting.get(form);
    waiting.delete(form);
    form.querySelectorAll(".upload-wait").forEach(function (note) { note.remove(); });
    if (!form.querySelector('[data-uploader] .thumb[data-state="failed"]')) {
      form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var busy = form.querySelector && uploading(form);
    if (!busy) { return; }
    event.preventDefault();
    event.stopPropagation();
    waiting.set(form, event.submitter || null);
    var uploader = busy.closest("[data-uploader]");
    var note = uploader.querySelector(".upload-wait");
    if (!note) {
      note = document.createElement("p");
      note.className = "hint upload-wait";
      note.setAttribute("role", "status");
      uploader.appendChild(note);
    }
    note.textContent = uploader.getAttribute("data-wait");
  }, true);

  function enhance(root) {
    detectTimezone(root);
    passwordToggles(root);
    noDoubleSubmit(root);
    typeaheads(root);
    copyButtons(root);
    uploaders(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    focusFirstNotice(document);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    // An outerHTML swap leaves the old target out of the page: look at its successor.
    var root = event.detail.target;
    if (!root.isConnected) { root = (root.id && document.getElementById(root.id)) || document; }
    enhance(root);
    if (root.querySelector) { focusFirstNotice(root); }
  });
  // A page's refusal in place (403, 404, a crash) is shown where the page's own answer goes.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var inPlace = event.detail.elt && event.detail.elt.getAttribute("hx-select") === "#main";
    if (inPlace && xhr.status >= 400 && /text\/html/.test(xhr.getResponseHeader("Content-Type") || "")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (!event.detail.successful && event.detail.elt) { releaseForm(event.detail.elt.closest("form")); }
  });
  // The session's CSRF token rides along on every htmx request.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
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
