// Starts Swagger UI (/docs) or ReDoc (/redoc) on the OpenAPI document named by <body data-openapi-url>.
(() => {
  "use strict";

  function start() {
    const url = document.body.dataset.openapiUrl;
    const swagger = document.getElementById("swagger-ui");
    if (swagger && window.SwaggerUIBundle) {
      window.ui = window.SwaggerUIBundle({
        url,
        domNode: swagger,
        presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
        layout: "BaseLayout",
        deepLinking: true,
        showExtensions: true,
        showCommonExtensions: true,
        validatorUrl: null,
      });
    }
    const redoc = document.getElementById("redoc");
    if (redoc && window.Redoc) {
      window.Redoc.init(url, {}, redoc);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
