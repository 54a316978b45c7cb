// QueryForge docs: filter the index's list as you type; highlight a pipeline's lineage on hover/focus.
(function () {
  "use strict";
  var input = document.getElementById("search");
  var data = document.getElementById("search-index");
  if (input && data) {
    var index = JSON.parse(data.textContent);
    var items = document.querySelectorAll("#results li");
    var count = document.getElementById("search-count");
    var filter = function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      items.forEach(function (li) {
        var text = index[Number(li.getAttribute("data-i"))].text;
        var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
        li.hidden = !hit;
        if (hit) { shown += 1; }
      });
      count.textContent = words.length ? shown + " of " + items.length + " match" : items.length + " entries";
    };
    input.addEventListener("input", filter);
    filter();
  }
  document.querySelectorAll("svg.lineage").forEach(function (svg) {
    var edges = Array.prototype.slice.call(svg.querySelectorAll(".edge"));
    var walk = function (start, from, to) {
      var seen = Object.create(null); var todo = [start];
      while (todo.length) {
        var n = todo.pop();
        edges.forEach(function (e) {
          var next = e.getAttribute(to);
          if (e.getAttribute(from) === n && !seen[next]) { seen[next] = true; todo.push(next); }
        });
      }
      return seen;
    };
    var light = function (name) {
      var lit = walk(name, "data-from", "data-to");
      var up = walk(name, "data-to", "data-from");
      Object.keys(up).forEach(function (k) { lit[k] = true; });
      lit[name] = true;
      svg.classList.add("highlighting");
      svg.querySelectorAll(".node").forEach(function (node) {
        node.classList.toggle("lit", !!lit[node.getAttribute("data-node")]);
      });
      edges.forEach(function (e) {
        e.classList.toggle("lit", !!(lit[e.getAttribute("data-from")] && lit[e.getAttribute("data-to")]));
      });
    };
    var clear = function () { svg.classList.remove("highlighting"); };
    svg.querySelectorAll(".node").forEach(function (node) {
      var name = node.getAttribute("data-node");
      node.addEventListener("mouseenter", function () { light(name); });
      node.addEventListener("focus", function () { light(name); });
      node.addEventListener("mouseleave", clear);
      node.addEventListener("blur", clear);
    });
  });
})();
