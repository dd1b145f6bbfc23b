// The account's own page: who it is, and the app passwords that let
// Subsonic apps (DSub, Symfonium, Feishin, …) play from Rondo.

import { useState } from "react";
import { useMutation, useQuery } from "urql";
import { graphql } from "../gql";
import { useSession } from "../session";
import { ErrorNote } from "./Browse";

const AppPasswords = graphql(`
  query AppPasswords {
    appPasswords {
      id
      name
      createdAt
    }
  }
`);

const Create = graphql(`
  mutation CreateAppPassword($name: String!) {
    createAppPassword(name: $name) {
      appPassword {
        id
        name
      }
      secret
    }
  }
`);

const Revoke = graphql(`
  mutation RevokeAppPassword($id: ID!) {
    revokeAppPassword(id: $id)
  }
`);

export function Me() {
  const { user } = useSession();
  const [{ data, error }, refetch] = useQuery({ query: AppPasswords, requestPolicy: "cache-and-network" });
  const [, create] = useMutation(Create);
  const [, revoke] = useMutation(Revoke);
  const [name, setName] = useState("");
  const [made, setMade] = useState<{ name: string; secret: string }>();
  const [problem, setProblem] = useState<string>();
  const server = window.location.origin;
  return (
    <section>
      <h1>Your account</h1>
      <p>
        Logged in as <strong>{user?.name}</strong> ({user?.role === "ADMIN" ? "admin" : "listener"}).
      </p>
      <h2>Subsonic apps</h2>
      <p className="sub">
        Apps that speak the Subsonic API play from Rondo: give them the server <code data-testid="subsonic-server">{server}</code>,
        your name, and an app password made here (each app its own, so that one can be revoked alone).
      </p>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          const r = await create({ name });
          if (r.error || !r.data) {
            setProblem(r.error?.graphQLErrors[0]?.message ?? r.error?.message ?? "Something went wrong");
            return;
          }
          setMade({ name: r.data.createAppPassword.appPassword.name, secret: r.data.createAppPassword.secret });
          setName("");
          setProblem(undefined);
          refetch({ requestPolicy: "network-only" });
        }}
      >
        <label htmlFor="app-name">New app password for</label>
        <input
          id="app-name"
          required
          maxLength={100}
          placeholder="DSub on my phone"
          value={name}
          onChange={(e) => setName(e.target.value)}
        />
        <button type="submit" className="primary">
          Create
        </button>
      </form>
      {problem && (
        <p className="error" role="alert">
          {problem}
        </p>
      )}
      {made && (
        <div className="notice" role="status">
          <p>
            The app password for <strong>{made.name}</strong>, shown this once:
          </p>
          <p>
            <code data-testid="app-secret">{made.secret}</code>{" "}
            <button type="button" onClick={() => void navigator.clipboard?.writeText(made.secret)}>
              Copy
            </button>
          </p>
        </div>
      )}
      <ErrorNote error={error} />
      <ul className="plain" aria-label="App passwords">
        {data?.appPasswords.map((p) => (
          <li key={p.id} className="row">
            <span data-testid="app-password-name">{p.name}</span>{" "}
            <span className="sub">made {new Date(p.createdAt).toLocaleDateString()}</span>{" "}
            <button
              type="button"
              aria-label={`Revoke ${p.name}`}
              onClick={async () => {
                const r = await revoke({ id: p.id });
                if (r.error) setProblem(r.error.graphQLErrors[0]?.message ?? r.error.message);
                else refetch({ requestPolicy: "network-only" });
              }}
            >
              Revoke
            </button>
          </li>
        ))}
        {data && data.appPasswords.length === 0 && <li className="sub">No app passwords yet.</li>}
      </ul>
    </section>
  );
}
