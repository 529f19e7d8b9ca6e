// Starts Swagger UI on /docs. It lives in a file, not in the page: the page allows no inline script.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI would otherwise send the document to validator.swagger.io.
    validatorUrl: null,
    // Sent with "Try it out": the session cookie goes along by itself; writes also need the
    // session's CSRF token, entered once under "Authorize" (the `csrf` scheme).
    withCredentials: true,
  });
})();
