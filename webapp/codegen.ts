import type { CodegenConfig } from "@graphql-codegen/cli";

// Types for every query in the app come from the gateway's committed SDL:
// a schema change that breaks a query breaks `npm run build`, not the user.
const config: CodegenConfig = {
  schema: "../gateway/schema.graphql",
  documents: ["src/**/*.{ts,tsx}", "!src/gql/**/*"],
  ignoreNoDocuments: false,
  generates: {
    "./src/gql/": {
      preset: "client",
      // Fragments (`SongRow`) are plain shared field lists, not masked.
      presetConfig: { fragmentMasking: false },
      config: { useTypeImports: true, enumsAsTypes: true },
    },
  },
};
export default config;
