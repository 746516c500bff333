// Error pages: each text area's live preview. The page (or the default one when the
// area is empty) is posted to the preview URL into its sandboxed frame, which renders
// it with sample values under a CSP of its own (no scripts, inline styles allowed).
(function () {
  "use strict";
  document.querySelectorAll("iframe[data-error-page]").forEach(function (frame) {
    var status = frame.getAttribute("data-error-page");
    var area = document.getElementById("id_page_" + status);
    var form = document.getElementById("preview-form-" + status);
    if (!area || !form) { return; }
    var copy = form.querySelector("textarea");
    var timer = null;
    function send() { copy.value = area.value; form.submit(); }
    area.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(send, 400);
    });
    send();
  });
})();
