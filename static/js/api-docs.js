// Starts Swagger UI on the API docs page (a file, not an inline script: the CSP allows only 'self').
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  window.SwaggerUIBundle({ url: root.dataset.schemaUrl, domNode: root, deepLinking: true });
})();
