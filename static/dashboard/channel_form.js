// Alert channel form: show only the fields of the chosen kind (without JavaScript every
// group shows, each under its legend, and the server keeps only the chosen kind's values).
(function () {
  "use strict";
  var form = document.getElementById("channel-form");
  if (!form) return;
  var kind = form.querySelector("select[name=kind]");
  if (!kind) return;
  function update() {
    form.querySelectorAll("[data-channel-kind]").forEach(function (group) {
      group.hidden = group.getAttribute("data-channel-kind") !== kind.value;
    });
  }
  kind.addEventListener("change", update);
  update();
})();
