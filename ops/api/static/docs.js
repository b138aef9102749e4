// The /docs page: Swagger UI over the API's own OpenAPI document (no inline script, so
// it runs under the API's Content-Security-Policy).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
