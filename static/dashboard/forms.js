/* Switchyard dashboard forms: a rows editor for header rules and header matches.
 *
 * The server renders a plain textarea (one rule a line: "set Name: value",
 * "add Name: value", "remove Name"; matches: "Name: value"), which is what the form
 * posts and what works without JavaScript. When this script runs, each
 * textarea[data-rows-editor] is hidden and replaced by rows of inputs (action, name,
 * value, Remove) and an "Add" button; every edit writes the rows back into the
 * textarea, so the server sees exactly the text format. A textarea whose text does
 * not parse is left as it is (the server's message explains the line).
 * No inline code: loaded from a file, allowed by the Content-Security-Policy.
 */
(function () {
  "use strict";

  var OPS = ["set", "add", "remove"];

  function parse(text, mode) {
    var rows = [];
    var lines = (text || "").split(/\r?\n/);
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim();
      if (!line) continue;
      var op = "set";
      var rest = line;
      if (mode === "rules") {
        var space = line.indexOf(" ");
        op = (space < 0 ? line : line.slice(0, space)).toLowerCase();
        rest = space < 0 ? "" : line.slice(space + 1).trim();
        if (OPS.indexOf(op) < 0) return null;
        if (op === "remove") {
          if (!rest) return null;
          rows.push({ op: op, name: rest, value: "" });
          continue;
        }
      }
      var colon = rest.indexOf(":");
      if (colon < 0) return null;
      rows.push({ op: op, name: rest.slice(0, colon).trim(), value: rest.slice(colon + 1).trim() });
    }
    return rows;
  }

  function serialize(rows, mode) {
    var lines = [];
    rows.forEach(function (r) {
      if (!r.name && !r.value) return;
      if (mode === "rules" && r.op === "remove") lines.push("remove " + r.name);
      else lines.push((mode === "rules" ? r.op + " " : "") + r.name + ": " + r.value);
    });
    return lines.join("\n");
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  function enhance(textarea) {
    var mode = textarea.getAttribute("data-rows-editor");
    var rows = parse(textarea.value, mode);
    if (rows === null) return; // keep the text: the server names the line it cannot read
    var field = textarea.closest(".field") || textarea.parentNode;
    var label = field.querySelector('label[for="' + textarea.id + '"]');
    var noun = mode === "rules" ? "rule" : "header";
    var fieldName = label ? label.textContent.trim() : textarea.name;

    var editor = el("div", { "class": "rows-editor", role: "group", "data-rows-for": textarea.name });
    var described = textarea.getAttribute("aria-describedby");
    if (described) editor.setAttribute("aria-describedby", described);
    if (label) {
      label.id = label.id || textarea.id + "-label";
      editor.setAttribute("aria-labelledby", label.id);
      label.removeAttribute("for");
    }
    var head = el("div", { "class": "rows-head", "aria-hidden": "true" });
    if (mode === "rules") head.appendChild(el("span", {}, "Action"));
    head.appendChild(el("span", {}, "Header name"));
    head.appendChild(el("span", {}, "Value"));
    head.appendChild(el("span", {}, ""));
    var list = el("div", { "class": "rows-list" });
    var empty = el("p", { "class": "muted small rows-empty" }, mode === "rules" ? "No header rules." : "No header matches.");
    var add = el("button", { type: "button", "class": "btn small rows-add" }, mode === "rules" ? "Add header rule" : "Add header match");
    add.setAttribute("aria-label", (mode === "rules" ? "Add a rule to " : "Add a match to ") + fieldName);

    function sync() {
      var current = [];
      list.querySelectorAll(".rows-row").forEach(function (row, i) {
        var op = row.querySelector("select");
        var name = row.querySelector("input.rows-name");
        var value = row.querySelector("input.rows-value");
        var n = i + 1;
        var opValue = op ? op.value : "set";
        value.disabled = opValue === "remove";
        value.placeholder = opValue === "remove" ? "(removed)" : "value";
        if (op) op.setAttribute("aria-label", fieldName + ", " + noun + " " + n + ": action");
        name.setAttribute("aria-label", fieldName + ", " + noun + " " + n + ": header name");
        value.setAttribute("aria-label", fieldName + ", " + noun + " " + n + ": value");
        row.querySelector(".rows-remove").setAttribute("aria-label", "Remove " + noun + " " + n + " of " + fieldName);
        current.push({ op: opValue, name: name.value.trim(), value: opValue === "remove" ? "" : value.value.trim() });
      });
      textarea.value = serialize(current, mode);
      empty.hidden = current.length > 0;
      head.hidden = current.length === 0;
    }

    function addRow(r) {
      var row = el("div", { "class": "rows-row" });
      if (mode === "rules") {
        var select = el("select", { "class": "rows-op" });
        OPS.forEach(function (op) {
          var option = el("option", { value: op }, op);
          if (op === r.op) option.selected = true;
          select.appendChild(option);
        });
        row.appendChild(select);
      }
      var name = el("input", { type: "text", "class": "rows-name", placeholder: "X-Header", spellcheck: "false", autocomplete: "off" });
      name.value = r.name;
      var value = el("input", { type: "text", "class": "rows-value", placeholder: "value", spellcheck: "false", autocomplete: "off" });
      value.value = r.value;
      var remove = el("button", { type: "button", "class": "btn small rows-remove" }, "Remove");
      remove.addEventListener("click", function () {
        var next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        sync();
        var target = next ? next.querySelector("select, input") : add;
        target.focus();
      });
      row.appendChild(name);
      row.appendChild(value);
      row.appendChild(remove);
      list.appendChild(row);
      return row;
    }

    rows.forEach(addRow);
    add.addEventListener("click", function () {
      var row = addRow({ op: "set", name: "", value: "" });
      sync();
      row.querySelector("select, input").focus();
    });
    editor.addEventListener("input", sync);
    editor.addEventListener("change", sync);
    editor.appendChild(head);
    editor.appendChild(list);
    editor.appendChild(empty);
    editor.appendChild(add);
    textarea.hidden = true;
    textarea.setAttribute("aria-hidden", "true");
    textarea.tabIndex = -1;
    textarea.insertAdjacentElement("afterend", editor);
    var form = textarea.form;
    if (form) form.addEventListener("submit", sync);
    sync();
  }

  function start() {
    document.querySelectorAll("textarea[data-rows-editor]").forEach(enhance);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
