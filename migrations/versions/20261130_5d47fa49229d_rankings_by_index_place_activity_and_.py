"""rankings by index: place, activity and tie order copied into household months

Each household month gets a copy of whether its household is active, the village's and group's
names, the house number and its length (the rankings' tie order), filled from the households as
they are now; the place columns are refreshed too, since they now follow the household. The
scope indexes gain is_active, and one index holds a month in ranking order. Each villager group
gets its count of active households.

Revision ID: 5d47fa49229d
Revises: 7cb99fa0ef90
Create Date: 2026-11-30 21:10:04.315838

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5d47fa49229d'
down_revision = '7cb99fa0ef90'
branch_labels = None
depends_on = None

COPIED = ('is_active', 'village_name', 'group_name', 'house_number', 'house_length')


def _backfill():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            "UPDATE household_months hm SET group_id = h.group_id, village_id = g.village_id, "
            "town_id = v.town_id, is_active = h.is_active, village_name = v.name, "
            "group_name = g.name, house_number = h.house_number, "
            "house_length = length(h.house_number) "
            "FROM households h JOIN villager_groups g ON g.id = h.group_id "
            "JOIN villages v ON v.id = g.village_id WHERE h.id = hm.household_id"
        )
        return
    # SQLite before 3.33 has no UPDATE ... FROM; an embedded database is small.
    household = "(SELECT {} FROM households h WHERE h.id = household_months.household_id)"
    group = (
        "(SELECT {} FROM households h JOIN villager_groups g ON g.id = h.group_id "
        "WHERE h.id = household_months.household_id)"
    )
    village = (
        "(SELECT {} FROM households h JOIN villager_groups g ON g.id = h.group_id "
        "JOIN villages v ON v.id = g.village_id WHERE h.id = household_months.household_id)"
    )
    values = {
        'group_id': household.format('h.group_id'),
        'village_id': group.format('g.village_id'),
        'town_id': village.format('v.town_id'),
        'is_active': household.format('h.is_active'),
        'village_name': village.format('v.name'),
        'group_name': group.format('g.name'),
        'house_number': household.format('h.house_number'),
        'house_length': household.format('length(h.house_number)'),
    }
    op.execute(
        "UPDATE household_months SET "
        + ", ".join(f"{column} = {value}" for column, value in values.items())
    )


def upgrade():
    with op.batch_alter_table('villager_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active_households', sa.Integer(), server_default='0', nullable=False))
    op.execute(
        "UPDATE villager_groups SET active_households = (SELECT count(*) FROM households h "
        "WHERE h.group_id = villager_groups.id AND h.is_active)"
    )
    with op.batch_alter_table('household_months', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_active', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('village_name', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('group_name', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('house_number', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('house_length', sa.Integer(), nullable=True))
    _backfill()
    with op.batch_alter_table('household_months', schema=None) as batch_op:
        batch_op.alter_column('is_active', existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column('village_name', existing_type=sa.String(length=60), nullable=False)
        batch_op.alter_column('group_name', existing_type=sa.String(length=60), nullable=False)
        batch_op.alter_column('house_number', existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column('house_length', existing_type=sa.Integer(), nullable=False)
    # Outside the batch: a batch rebuild on SQLite cannot carry the descending column.
    for scope in ('group', 'town', 'village'):
        op.drop_index(f'ix_household_months_month_{scope}_points', table_name='household_months')
        op.create_index(f'ix_household_months_month_{scope}_active_points', 'household_months', ['month', f'{scope}_id', 'is_active', 'points'], unique=False)
    op.create_index('ix_household_months_ranking', 'household_months', ['month', 'is_active', sa.literal_column('points DESC'), 'village_name', 'group_name', 'house_length', 'house_number', 'household_id', 'town_id'], unique=False)


def downgrade():
    op.drop_index('ix_household_months_ranking', table_name='household_months')
    for scope in ('village', 'town', 'group'):
        op.drop_index(f'ix_household_months_month_{scope}_active_points', table_name='household_months')
        op.create_index(f'ix_household_months_month_{scope}_points', 'household_months', ['month', f'{scope}_id', 'points'], unique=False)
    with op.batch_alter_table('household_months', schema=None) as batch_op:
        for column in reversed(COPIED):
            batch_op.drop_column(column)
    with op.batch_alter_table('villager_groups', schema=None) as batch_op:
        batch_op.drop_column('active_households')
