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
      // 64-bit counts and instants are strings on the wire.
      config: {
        useTypeImports: true,
        enumsAsTypes: true,
        scalars: { UnsignedInt64: "string", DateTime: "string" },
      },
    },
  },
};
export default config;
