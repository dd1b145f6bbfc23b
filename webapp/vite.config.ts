/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves the build at `/` (SPA fallback) and GraphQL at
// `/graphql` on the same origin, so the app needs no configured URL.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", sourcemap: true },
  server: {
    proxy: { "/graphql": { target: "https://127.0.0.1:8443", secure: false } },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
